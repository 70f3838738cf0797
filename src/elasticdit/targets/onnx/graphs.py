"""Writing the ONNX artifacts: a graph per method (`<method>.onnx`), every graph's initializers pointing into one
`weights.bin`.

Graphs come from `torch.onnx.export(program, ..., dynamo=True)` at opset 18 with the per-node metadata stripped
(it holds absolute source paths). Tensors are deduplicated by content, not name: the exporter's optimiser folds
the Linear weight transposes into initializers named `val_<n>` per graph, so the same weight has different
names in different graphs. The `dynamic-int8` scheme runs ONNX Runtime's `quantize_dynamic` on each denoise
graph (embedded weights, in memory), then bundles the same way: quantized weights are identical across graphs.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ...errors import ExportError, first_line
from ...lowering import LoweredUnit
from ...progress import Reporter
from ...quant import scheme
from ...quiet import python_output_captured, silence_library_noise
from ...recipes import Recipe
from ..base import Artifact

OPSET = 18
WEIGHTS = "weights.bin"
INLINE_BELOW = 1024  # tensors smaller than this many bytes stay inside their graph
ALIGN, BIG_ALIGN, BIG = 64, 65536, 1 << 20  # offsets; tensors over 1 MiB on 64 KiB (mmap granularity)


def _failing_op(exc: BaseException) -> str:
    """The torch op an exporter error names, when it names one."""
    text = "".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    found = re.search(r"\b(aten|prims|torch\.ops\.\w+)(::|\.)[A-Za-z_][\w.]*", text)
    return f" at {found.group(0)}" if found else ""


def export_graph(lowered: LoweredUnit) -> Any:
    """The lowered program -> ONNX (dynamo exporter, opset 18, onnxscript optimiser) -> ModelProto, weights
    embedded and metadata stripped."""
    silence_library_noise()  # "torchvision is not installed" and the like, from loggers the exporter creates
    unit = lowered.unit
    try:
        with python_output_captured(), torch.no_grad():
            program = torch.onnx.export(
                lowered.program,
                unit.example_inputs,
                dynamo=True,
                opset_version=OPSET,
                input_names=[s.name for s in unit.inputs],
                output_names=[s.name for s in unit.outputs],
                optimize=True,
                verbose=False,
                report=False,
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export of {unit.method} failed{_failing_op(exc)}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    model = program.model_proto
    strip_metadata(model)
    return model


def strip_metadata(model) -> None:
    """Drop doc strings and metadata_props (stack traces with absolute paths, FX node names)."""
    import onnx

    def graph(g) -> None:
        g.ClearField("doc_string")
        del g.metadata_props[:]
        for node in g.node:
            del node.metadata_props[:]
            node.ClearField("doc_string")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graph(attr.g)
                for sub in attr.graphs:
                    graph(sub)
        for value in [*g.input, *g.output, *g.value_info, *g.initializer]:
            del value.metadata_props[:]

    graph(model.graph)
    for function in model.functions:
        del function.metadata_props[:]
        for node in function.node:
            del node.metadata_props[:]
    model.ClearField("doc_string")
    del model.metadata_props[:]


def quantize(model: Any, recipe: Recipe, method: str) -> Any:
    """The recipe's scheme on one embedded graph (quant/onnx_dynamic.py), metadata stripped again."""
    try:
        quantized = scheme(recipe.quantization).run(model, recipe, method)
    except Exception as exc:
        raise ExportError(
            f"dynamic int8 quantization of {method} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    strip_metadata(quantized)
    return quantized


def _tensor_bytes(t) -> bytes:
    from onnx import numpy_helper

    return t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()


def bundle_graphs(models: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    """Write `<name>.onnx` per graph and one shared weights.bin: every distinct tensor (sha256 of dtype, dims and
    bytes) of at least INLINE_BELOW bytes once, in graph order; graphs serialised deterministically."""
    from onnx import numpy_helper
    from onnx.external_data_helper import _get_all_tensors, set_external_data, uses_external_data

    index: dict[tuple, tuple[int, int]] = {}
    info = {}
    with (folder / WEIGHTS).open("wb") as weights:
        pos = 0
        for name, original in models.items():
            model = copy.deepcopy(original)
            refs = 0
            for t in _get_all_tensors(model):
                if uses_external_data(t):
                    raise ExportError(f"{name}: tensor {t.name} is already external")
                data = _tensor_bytes(t)
                if len(data) < INLINE_BELOW:
                    continue
                key = (t.data_type, tuple(t.dims), hashlib.sha256(data).hexdigest())
                if key not in index:
                    pad = (-pos) % (BIG_ALIGN if len(data) > BIG else ALIGN)
                    weights.write(b"\0" * pad + data)
                    index[key] = (pos + pad, len(data))
                    pos += pad + len(data)
                if not t.HasField("raw_data"):  # set_external_data needs raw_data
                    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
                offset, length = index[key]
                set_external_data(t, location=WEIGHTS, offset=offset, length=length)
                t.ClearField("raw_data")
                refs += 1
            path = folder / f"{name}.onnx"
            path.write_bytes(model.SerializeToString(deterministic=True))
            info[name] = {"external_tensors": refs, "graph_bytes": path.stat().st_size}
    return info


def graph_report(model, method: str, bundled: dict[str, Any], quantized: bool) -> dict[str, Any]:
    ops = Counter(node.op_type for node in model.graph.node)
    return {
        "graph": f"{method}.onnx",
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "op_histogram": dict(sorted(ops.items())),
        "external_tensors": bundled["external_tensors"],
        "graph_bytes": bundled["graph_bytes"],
        "quantization": "dynamic-int8" if quantized else "none",
    }


def write_graphs(lowered: list[LoweredUnit], recipe: Recipe, folder: Path, report: Reporter) -> list[Artifact]:
    """Write `<method>.onnx` per method + weights.bin into folder; one Artifact per method."""
    graphs = {}
    for lu in lowered:
        report.stage(f"ONNX: converting {lu.method}")
        graphs[lu.method] = export_graph(lu)
        if lu.quantize:  # decode and encode_text stay float32
            report.stage(f"ONNX: quantizing {lu.method}")
            graphs[lu.method] = quantize(graphs[lu.method], recipe, lu.method)
    report.stage("ONNX: writing the graphs and the shared weights")
    bundled = bundle_graphs(graphs, folder)
    report.advance()
    return [
        Artifact(
            lu.method,
            f"{lu.method}.onnx",
            lu.unit.inputs,
            lu.unit.outputs,
            graph_report(graphs[lu.method], lu.method, bundled[lu.method], lu.quantize),
        )
        for lu in lowered
    ]
