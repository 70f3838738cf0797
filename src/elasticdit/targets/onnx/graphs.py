"""Writing the ONNX artifacts: a graph per method (`<method>.onnx`), every graph's initializers pointing into one
`weights.bin`.

Graphs come from `torch.onnx.export(program, ..., dynamo=True)` at opset 18 with the per-node metadata stripped
(it holds absolute source paths). Tensors are deduplicated by content, not name: the exporter's optimiser folds
the Linear weight transposes into initializers named `val_<n>` per graph, so the same weight has different
names in different graphs. The `dynamic-int8` scheme runs ONNX Runtime's `quantize_dynamic` on each denoise
graph, then bundles the same way: quantized weights are identical across graphs. One method is in memory at a time:
converted, quantized and written before the next is converted.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections import Counter
from collections.abc import Callable
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


class SharedWeights:
    """`weights.bin` as graphs are added: every distinct tensor (sha256 of dtype, dims and bytes) of at least
    INLINE_BELOW bytes once, in the order the graphs come; each graph is written as `<name>.onnx` pointing into it
    when added, its tensors' bytes dropped, so one graph's weights are in memory at a time."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index: dict[tuple, tuple[int, int]] = {}
        self.pos = 0
        self.file = (folder / WEIGHTS).open("wb")

    def __enter__(self) -> SharedWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def add(self, name: str, model: Any) -> dict[str, Any]:
        """Write `model` (changed in place: its large tensors become references into weights.bin) as
        `<name>.onnx`, serialised deterministically."""
        from onnx import numpy_helper
        from onnx.external_data_helper import _get_all_tensors, set_external_data, uses_external_data

        refs = 0
        for t in _get_all_tensors(model):
            if uses_external_data(t):
                raise ExportError(f"{name}: tensor {t.name} is already external")
            data = _tensor_bytes(t)
            if len(data) < INLINE_BELOW:
                continue
            key = (t.data_type, tuple(t.dims), hashlib.sha256(data).hexdigest())
            if key not in self.index:
                pad = (-self.pos) % (BIG_ALIGN if len(data) > BIG else ALIGN)
                self.file.write(b"\0" * pad + data)
                self.index[key] = (self.pos + pad, len(data))
                self.pos += pad + len(data)
            if not t.HasField("raw_data"):  # set_external_data needs raw_data
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
            offset, length = self.index[key]
            set_external_data(t, location=WEIGHTS, offset=offset, length=length)
            t.ClearField("raw_data")
            refs += 1
        path = self.folder / f"{name}.onnx"
        path.write_bytes(model.SerializeToString(deterministic=True))
        return {"external_tensors": refs, "graph_bytes": path.stat().st_size}


def bundle_graphs(models: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    """`<name>.onnx` per graph and their shared weights.bin (`SharedWeights`); the given graphs are left as they
    were."""
    with SharedWeights(folder) as shared:
        return {name: shared.add(name, copy.deepcopy(model)) for name, model in models.items()}


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


def write_graphs(
    lowered: list[LoweredUnit], recipe: Recipe, folder: Path, report: Reporter, release: Callable[[], object]
) -> list[Artifact]:
    """Write `<method>.onnx` per method + weights.bin into folder, one method at a time (converted, quantized,
    written; the checkpoint pages its conversion read released once converted); one Artifact per method."""
    artifacts = []
    with SharedWeights(folder) as shared:
        for lu in lowered:
            report.stage(f"ONNX: converting {lu.method}")
            graph = export_graph(lu)
            release()  # the graph holds its own copy of the weights it read
            if lu.quantize:  # decode and encode_text stay float32
                report.stage(f"ONNX: quantizing {lu.method}")
                graph = quantize(graph, recipe, lu.method)
            report.stage(f"ONNX: writing {lu.method} into the shared weights")
            bundled = shared.add(lu.method, graph)
            details = graph_report(graph, lu.method, bundled, lu.quantize)
            artifacts.append(Artifact(lu.method, f"{lu.method}.onnx", lu.unit.inputs, lu.unit.outputs, details))
            del graph
    report.advance()
    return artifacts
