"""ONNX: a graph per export unit (`<method>.onnx`), every graph's initializers pointing into one `weights.bin`.

Graphs come from `torch.onnx.export(..., dynamo=True)` at opset 18 with the per-node metadata stripped (it
holds absolute source paths). Tensors are deduplicated by content, not name: the exporter's optimiser folds
the Linear weight transposes into initializers named `val_<n>` per graph, so the same weight has different
names in different graphs. The `dynamic-int8` scheme runs ONNX Runtime's `quantize_dynamic` on each denoise
graph (embedded weights, in memory), then bundles the same way: quantized weights are identical across graphs.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExportError
from ..model.pipeline import Models
from ..progress import Reporter
from ..recipes import Recipe
from ..slicing import ExportUnit

OPSET = 18
WEIGHTS = "weights.bin"
INLINE_BELOW = 1024  # tensors smaller than this many bytes stay inside their graph
ALIGN, BIG_ALIGN, BIG = 64, 65536, 1 << 20  # offsets; tensors over 1 MiB on 64 KiB (mmap granularity)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _failing_op(exc: BaseException) -> str:
    """The torch op an exporter error names, when it names one."""
    text = "".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    found = re.search(r"\b(aten|prims|torch\.ops\.\w+)(::|\.)[A-Za-z_][\w.]*", text)
    return f" at {found.group(0)}" if found else ""


def export_graph(unit: ExportUnit) -> Any:
    """torch.export -> ONNX (dynamo exporter, opset 18, onnxscript optimiser) -> ModelProto, weights embedded."""
    for name in list(logging.root.manager.loggerDict):  # "torchvision is not installed" and the like
        if name.startswith(("torch.onnx", "onnxscript")):
            logging.getLogger(name).setLevel(logging.ERROR)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), torch.no_grad():
            program = torch.onnx.export(
                unit.module,
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
            f"ONNX export of {unit.method} failed{_failing_op(exc)}: {type(exc).__name__}: {_first_line(exc)}"
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


def _mean_matmuls(model) -> list[str]:
    """MatMul nodes whose B is a constant [D, 1] column of 1/D: the shared layers' means over the last dim.
    Dynamic quantization would feed them 8-bit activations (norm statistics), so they stay float."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            b = numpy_helper.to_array(inits[node.input[1]])
            if b.ndim == 2 and b.shape[1] == 1 and np.all(b == np.float32(1.0 / b.shape[0])):
                names.append(node.name)
    return names


def quantize(model, method: str):
    """ONNX Runtime dynamic quantization (int8 per-channel symmetric weights) of one embedded graph."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="elasticdit-onnx-") as tmp:
        out = Path(tmp) / f"{method}.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                quantize_dynamic(
                    model,
                    out,
                    per_channel=True,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=_mean_matmuls(model),
                    use_external_data_format=False,
                )
        except Exception as exc:
            raise ExportError(
                f"dynamic int8 quantization of {method} failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        quantized = onnx.load(str(out))
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


def write_onnx(
    units: list[ExportUnit], models: Models, recipe: Recipe, folder: Path, report: Reporter, calibration
) -> dict[str, dict]:
    """Write `<method>.onnx` per unit + weights.bin into folder; returns {method: {"file", "report"}}."""
    graphs = {}
    quantized = set()
    for unit in units:
        report.stage(f"ONNX: exporting {unit.method}")
        graphs[unit.method] = export_graph(unit)
        if recipe.quantization == "dynamic-int8" and unit.kind == "denoise":  # decode/encode_text stay float32
            report.stage(f"ONNX: quantizing {unit.method}")
            graphs[unit.method] = quantize(graphs[unit.method], unit.method)
            quantized.add(unit.method)
        report.advance()
    report.stage("ONNX: writing the graphs and the shared weights")
    bundled = bundle_graphs(graphs, folder)
    report.advance()
    return {
        m: {"file": f"{m}.onnx", "report": graph_report(g, m, bundled[m], m in quantized)} for m, g in graphs.items()
    }
