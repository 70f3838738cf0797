"""Converting lowered programs to Core ML: `ct.convert` per method (mlprogram, the recipe's deployment target,
fp16 compute unless the recipe asks fp32), the recipe's weight compression on that single-function model, then
`save_multifunction` (weights of equal value get one blob) and canonical bytes."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ExportError, first_line
from ...lowering import LoweredUnit
from ...progress import Reporter
from ...quant import scheme
from ...quant.coreml import Palettes
from ...quiet import python_output_captured
from ...recipes import Recipe
from ...slicing import ExportUnit
from ...specs import MethodKind, TensorSpec
from ..base import Artifact
from .ct import coremltools

PACKAGE = "model.mlpackage"
DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int32, "int32": np.int32}
_NAMESPACE = uuid.UUID("6f1c2a0e-6a55-4d8e-9d43-2a3c0f0e5a11")  # fixed: Manifest.json item ids from paths


def graph_digest(ep: torch.export.ExportedProgram) -> str:
    import hashlib

    return hashlib.sha256(ep.graph_module.code.encode()).hexdigest()


def failing_op(exc: BaseException) -> str:
    """Which torch op (frontend) or MIL op / graph pass (optimisation) a coremltools exception came from."""
    from coremltools.converters.mil.mil import Operation

    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    node = op = pass_name = None
    for frame in reversed(frames):
        local = frame.f_locals
        n = local.get("node")
        if node is None and isinstance(n, torch.fx.Node):
            node = f"torch op '{n.target}' (node {n.name})"
        elif node is None and hasattr(n, "kind") and hasattr(n, "name"):  # coremltools' InternalTorchIRNode
            node = f"torch op '{n.kind}' (node {n.name})"
        o = local.get("op")
        if op is None and isinstance(o, Operation):
            op = o
        if pass_name is None and isinstance(local.get("pass_name"), str):
            pass_name = local["pass_name"]
    if node is not None:
        return node
    where = f" in pass {pass_name}" if pass_name else ""
    if op is not None:
        return f"MIL op '{op.op_type}' ({op.name}){where}"
    return f"an unnamed op{where}" if where else "an unnamed op"


def keeps_fp32(op, depth: int = 6) -> bool:
    """A MIL op that fp16 compute leaves in fp32: sin/cos, and any op whose results feed only such ops.

    That is the timestep embedding: cos/sin of sigma * 1000 * freqs, where fp16's spacing at 1000 (0.5) puts
    errors of up to ~0.3 into the embedding. `fp32_island` picks the same ops in the torch graph.
    """
    if op.op_type in ("sin", "cos"):
        return True
    if depth == 0 or op.op_type == "const":  # the island is a short chain; never walk the whole network
        return False
    children = [child for out in op.outputs for child in out.child_ops]
    return bool(children) and all(keeps_fp32(child, depth - 1) for child in children)


def convert(unit: ExportUnit, ep: torch.export.ExportedProgram, precision: str, deployment: str = "iOS18") -> Any:
    """`ct.convert` of one unit: mlprogram for the deployment target (e.g. iOS18), named inputs and outputs of
    the manifest's dtypes."""
    ct = coremltools()
    inputs = [ct.TensorType(name=s.name, shape=tuple(s.shape), dtype=DTYPES[s.dtype]) for s in unit.inputs]
    outputs = [ct.TensorType(name=s.name, dtype=DTYPES[s.dtype]) for s in unit.outputs]
    try:
        with python_output_captured():
            return ct.convert(
                ep,
                convert_to="mlprogram",
                minimum_deployment_target=getattr(ct.target, deployment),
                compute_precision=(
                    ct.transform.FP16ComputePrecision(op_selector=lambda op: not keeps_fp32(op))
                    if precision == "fp16"
                    else ct.precision.FLOAT32
                ),
                inputs=inputs,
                outputs=outputs,
                skip_model_load=True,  # no Core ML runtime on Linux; nothing is compiled here
            )
    except Exception as exc:
        raise ExportError(
            f"Core ML conversion of {unit.method} failed at {failing_op(exc)}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


def merge(packages: dict[str, Path], out: Path, default: str) -> None:
    """One multifunction package; `save_multifunction` deduplicates consts of equal value across functions."""
    ct = coremltools()
    desc = ct.utils.MultiFunctionDescriptor()
    for method, path in packages.items():
        desc.add_function(str(path), src_function_name="main", target_function_name=method)
    desc.default_function_name = default
    with python_output_captured():
        ct.utils.save_multifunction(desc, str(out))


def canonicalize(pkg: Path, metadata: dict[str, str]) -> None:
    """Make the package's bytes a function of its content (coremltools 9.0 saves are not reproducible).

    Manifest.json gets uuid5(path) ids instead of uuid4s; model.mlmodel is re-serialised with sorted map keys
    (protobuf map order is random per process); file modes are normalised; executorch's debug-handle json is
    dropped. The metadata given replaces what `save_multifunction` dropped.
    """
    from coremltools.proto import Model_pb2

    manifest_path = pkg / "Manifest.json"
    doc = json.loads(manifest_path.read_text())
    old = doc["itemInfoEntries"]
    ids = {k: str(uuid.uuid5(_NAMESPACE, v["path"])) for k, v in old.items()}
    entries = {ids[k]: old[k] for k in sorted(old, key=lambda k: old[k]["path"])}
    doc = {
        "fileFormatVersion": doc["fileFormatVersion"],
        "itemInfoEntries": entries,
        "rootModelIdentifier": ids[doc["rootModelIdentifier"]],
    }
    manifest_path.write_text(json.dumps(doc, indent=4, sort_keys=True) + "\n")
    spec_path = pkg / "Data" / entries[doc["rootModelIdentifier"]]["path"]
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    spec.description.metadata.userDefined.clear()
    for key, value in sorted(metadata.items()):
        spec.description.metadata.userDefined[key] = value
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    (pkg / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
    for root, _, files in os.walk(pkg):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


def write_package(
    lowered: list[LoweredUnit],
    recipe: Recipe,
    folder: Path,
    report: Reporter,
    package: str = PACKAGE,
    release: Callable[[], object] = lambda: None,
) -> list[Artifact]:
    """Write `package` (model.mlpackage, or a chunked bundle's block-range package) into folder; one Artifact per
    method, with the dtypes the package really takes (Core ML has no int64 inputs: `tokens` becomes int32), so the
    manifest describes the package. `release` runs after each method is converted and saved."""
    from ... import __version__
    from .package import describe, feature_specs

    digests, taken = {}, {}
    palettes = Palettes(recipe.nbits) if recipe.quantization == "palettize" else None  # shared by the functions
    with tempfile.TemporaryDirectory(prefix="elasticdit-coreml-") as tmp:
        singles: dict[str, Path] = {}
        for lu in lowered:
            unit = lu.unit
            report.stage(f"Core ML: converting {unit.method}")
            digests[unit.method] = graph_digest(lu.program)
            mlmodel = convert(unit, lu.program, recipe.precision, recipe.minimum_deployment_target)
            if lu.quantize:  # decode and encode_text stay float, as on Android
                report.stage(f"Core ML: {recipe.quantization} {unit.method}")
                mlmodel = compress(mlmodel, recipe, unit.method, palettes)
            desc = mlmodel.get_spec().description
            taken[unit.method] = (
                _as_taken(unit.inputs, feature_specs(desc.input)),
                _as_taken(unit.outputs, feature_specs(desc.output)),
            )
            singles[unit.method] = Path(tmp) / f"{unit.method}.mlpackage"
            with python_output_captured():
                mlmodel.save(str(singles[unit.method]))
            del mlmodel
            release()
        report.stage("Core ML: merging the functions")
        default = next(lu.method for lu in lowered if lu.unit.kind == MethodKind.DENOISE)
        merge(singles, folder / package, default)
    canonicalize(
        folder / package,
        {"elasticdit.tool_version": __version__, "elasticdit.recipe": recipe.name, "elasticdit.default": default},
    )
    described = describe(folder / package)
    artifacts = []
    for lu in lowered:
        info = described[lu.method]
        info["graph_sha256"] = digests[lu.method]
        info["precision"] = recipe.precision
        info["compression"] = recipe.quantization if lu.unit.kind == MethodKind.DENOISE else "none"
        inputs, outputs = taken[lu.method]
        artifacts.append(Artifact(lu.method, package, inputs, outputs, info))
    report.advance()
    return artifacts


def compress(mlmodel: Any, recipe: Recipe, method: str, palettes: Palettes | None = None) -> Any:
    """The recipe's weight compression (quant/coreml.py) of one single-function model, failures named."""
    try:
        return scheme(recipe.quantization).run(mlmodel, recipe, method, palettes)
    except Exception as exc:
        raise ExportError(
            f"Core ML {recipe.quantization} compression of {method} failed at {failing_op(exc)}: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc


def _as_taken(specs: list[TensorSpec], taken: list[dict[str, Any]]) -> list[TensorSpec]:
    if [s.name for s in specs] != [t["name"] for t in taken]:
        raise ExportError(f"Core ML renamed the features {[s.name for s in specs]} to {[t['name'] for t in taken]}")
    return [replace(s, dtype=t["dtype"]) for s, t in zip(specs, taken, strict=True)]
