"""iOS: one Core ML multifunction ML program (`model.mlpackage`), a function per export unit; weights stored once.

Per unit: torch.export -> `run_decompositions({})` -> `ct.convert` (mlprogram, iOS18, fp16 compute unless the
recipe asks fp32) -> the recipe's weight compression on that single-function model (coremltools refuses
multifunction models) -> `save_multifunction`, which gives weights of equal value one blob -> canonical bytes.

Core ML cannot run on Linux. `ios_runner` checks the package's structure against the manifest there, and checks
numerics on the exact torch graph that went into `ct.convert`, fed with the weights decoded from the package's
weight.bin and run in float16 for fp16 recipes. On macOS it runs the Core ML functions themselves.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BundleError, ExportError
from ..manifest import TensorSpec
from ..model.elastic_dit import OUTPUT_PROJECTION
from ..model.pipeline import Models
from ..operating_points import OperatingPoint
from ..progress import Reporter
from ..recipes import Recipe
from ..slicing import ExportUnit, decode_unit, denoise_unit, encode_text_unit

PACKAGE = "model.mlpackage"
# Compression touches only the weights of these ops (never the SSBA mask, whose -inf entries a linear quantizer
# would turn into NaN, nor position codes); tensors of at most this many elements stay fp16.
COMPRESSED_OPS = ("linear", "conv", "conv_transpose", "matmul")
WEIGHT_THRESHOLD = 2048
DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int32, "int32": np.int32}
PACKAGE_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "INT32": "int32", "DOUBLE": "float64"}
_NAMESPACE = uuid.UUID("6f1c2a0e-6a55-4d8e-9d43-2a3c0f0e5a11")  # fixed: Manifest.json item ids from paths
MACOS_NOTE = "running the Core ML functions needs macOS"

# Facts the report counts, each with the published source it comes from (docs/ios.md has the full table).
ANE_RULES = {
    "gather": (
        "gather-family ops (embedding lookups, torch.roll, fancy indexing) ran on CPU in Apple's ANE DistilBERT",
        "apple/ml-ane-transformers README; hollance/neural-engine docs/unsupported-layers.md",
    ),
    "fp32_ops": (
        "ops typed fp32 run on GPU/CPU only; the Neural Engine computes in fp16",
        "coremltools guide 'Typed Execution' (typed-execution.html)",
    ),
    "rank5": (
        "rank-5 intermediates; the ANE's preferred layout is 4-D channels-first (B, C, 1, S)",
        "Apple ML Research, 'Deploying Transformers on the Apple Neural Engine' (2022), principle 1",
    ),
    "rank_over_5": (
        "tensors of rank > 5, which Core ML does not support at all",
        "coremltools Program._check_invalid_tensor_rank; apple/coremltools#1723",
    ),
}
GATHER_OPS = ("gather", "gather_along_axis", "gather_nd", "scatter", "scatter_along_axis", "scatter_nd", "non_zero")


@contextlib.contextmanager
def _quiet():
    """coremltools draws tqdm bars on stderr and logs warnings; keep them off the terminal."""
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def _ct():
    with _quiet():
        import coremltools as ct
    return ct


# ---------------------------------------------------------------- the graph given to ct.convert


def _means_as_reductions(ep: torch.export.ExportedProgram) -> int:
    """`F.linear(x, avg)` with a constant [1, D] vector of 1/D (the mean the shared layers spell as a matmul,
    which XNNPACK delegates) -> `mean(x, -1, keepdim=True)`. coremltools 9.0's `fuse_linear_bias` pass crashes
    on that linear followed by a scalar add (IndexError on the 0-d bias); a reduction is also the plainer op."""
    gm = ep.graph_module
    values = {**ep.state_dict, **ep.constants}
    consts = {s.arg.name: values.get(s.target) for s in ep.graph_signature.input_specs if s.target is not None}
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default or len(node.args) != 2:
            continue
        w = consts.get(getattr(node.args[1], "name", None))
        if w is None or w.dim() != 2 or w.shape[0] != 1 or not bool(torch.all(w == 1.0 / w.shape[1])):
            continue
        with gm.graph.inserting_before(node):
            mean = gm.graph.call_function(torch.ops.aten.mean.dim, (node.args[0], [-1], True))
        mean.meta = dict(node.meta)
        node.replace_all_uses_with(mean)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.lint()
    gm.recompile()
    return count


def coreml_program(unit: ExportUnit) -> torch.export.ExportedProgram:
    """The exact program `ct.convert` receives (export and `verify` both build it here)."""
    with torch.no_grad():
        ep = torch.export.export(unit.module, unit.example_inputs).run_decompositions({})
    _means_as_reductions(ep)
    return ep


def graph_digest(ep: torch.export.ExportedProgram) -> str:
    return hashlib.sha256(ep.graph_module.code.encode()).hexdigest()


# ---------------------------------------------------------------- conversion and compression


def _failing_op(exc: BaseException) -> str:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


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


def convert(unit: ExportUnit, ep: torch.export.ExportedProgram, precision: str):
    """`ct.convert` of one unit: mlprogram, iOS18, named inputs and outputs of the manifest's dtypes."""
    ct = _ct()
    inputs = [ct.TensorType(name=s.name, shape=tuple(s.shape), dtype=DTYPES[s.dtype]) for s in unit.inputs]
    outputs = [ct.TensorType(name=s.name, dtype=DTYPES[s.dtype]) for s in unit.outputs]
    try:
        with _quiet():
            return ct.convert(
                ep,
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS18,
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
            f"Core ML conversion of {unit.method} failed at {_failing_op(exc)}: {type(exc).__name__}: "
            f"{_first_line(exc)}"
        ) from exc


def compression_config(recipe: Recipe):
    """None for `none`; else the per-op config of the recipe's scheme for the weights of COMPRESSED_OPS."""
    cto = _ct().optimize.coreml
    if recipe.quantization == "linear-int8":
        op = cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD
        )
    elif recipe.quantization == "palettize":
        op = cto.OpPalettizerConfig(
            mode="kmeans",
            nbits=recipe.nbits,
            granularity="per_grouped_channel",
            group_size=recipe.group_size,
            weight_threshold=WEIGHT_THRESHOLD,
            num_kmeans_workers=1,
        )
    else:
        return None
    return cto.OptimizationConfig(op_type_configs=dict.fromkeys(COMPRESSED_OPS, op))


def output_projection_weights(mlmodel) -> list[str]:
    """Names of the const ops holding the output projections' weights (`proj_out`, `proj_out_r{r}`)."""
    return sorted(
        op.name
        for function in mlmodel._mil_program.functions.values()
        for op in function.operations
        if op.op_type == "const" and OUTPUT_PROJECTION in op.name
    )


def compress(mlmodel, recipe: Recipe, method: str):
    """Weight compression of one single-function model (coremltools refuses multifunction models).

    Palettization leaves the output projections in fp16: their error goes straight into the velocity (on the
    velocity-predicting trained demo dc0534d5, 4-bit palettes there cost 3-4 dB of denoise SNR for 0.3 MB)."""
    config = compression_config(recipe)
    if config is None:
        return mlmodel
    if recipe.quantization == "palettize":
        for name in output_projection_weights(mlmodel):
            config.set_op_name(name, None)
    from threadpoolctl import threadpool_limits

    cto = _ct().optimize.coreml
    step = cto.linear_quantize_weights if recipe.quantization == "linear-int8" else cto.palettize_weights
    try:
        # sklearn's k-means on many small groups: one OpenMP thread is both faster and reproducible here
        with _quiet(), threadpool_limits(limits=1):
            return step(mlmodel, config)
    except Exception as exc:
        raise ExportError(
            f"Core ML {recipe.quantization} compression of {method} failed at {_failing_op(exc)}: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def merge(packages: dict[str, Path], out: Path, default: str) -> None:
    """One multifunction package; `save_multifunction` deduplicates consts of equal value across functions."""
    ct = _ct()
    desc = ct.utils.MultiFunctionDescriptor()
    for method, path in packages.items():
        desc.add_function(str(path), src_function_name="main", target_function_name=method)
    desc.default_function_name = default
    with _quiet():
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


# ---------------------------------------------------------------- reading a package


def load_spec(pkg: Path, function: str | None = None):
    ct = _ct()
    try:
        with _quiet():
            return ct.models.MLModel(str(pkg), skip_model_load=True, function_name=function)
    except Exception as exc:
        what = f"function '{function}' of " if function else ""
        raise BundleError(f"cannot read {what}{pkg.name}: {_first_line(exc)}") from None


def feature_specs(features) -> list[dict[str, Any]]:
    from coremltools.proto import FeatureTypes_pb2

    names = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name
    out = []
    for f in features:
        arr = f.type.multiArrayType
        dtype = names(arr.dataType)
        out.append({"name": f.name, "shape": list(arr.shape), "dtype": PACKAGE_DTYPES.get(dtype, dtype.lower())})
    return out


def _walk_ops(block):
    for op in block.operations:
        yield op
        for sub in op.blocks:
            yield from _walk_ops(sub)


def function_ops(spec) -> dict[str, list]:
    return {name: list(_walk_ops(fn.block_specializations[fn.opset])) for name, fn in spec.mlProgram.functions.items()}


def ane_flags(ops: list) -> dict[str, Any]:
    """Counts of what the cited sources say keeps work off the Neural Engine; facts, not a placement forecast."""
    from coremltools.proto import MIL_pb2

    fp32 = MIL_pb2.DataType.Value("FLOAT32")
    counts: Counter = Counter()
    max_rank = 0
    largest: list[int] = []
    for op in ops:
        if op.type in GATHER_OPS:
            counts["gather"] += 1
        if op.type == "const" or op.type.startswith("constexpr_"):
            continue
        for out in op.outputs:
            if out.type.WhichOneof("type") != "tensorType":
                continue
            tt = out.type.tensorType
            max_rank = max(max_rank, tt.rank)
            counts["rank5"] += tt.rank == 5
            counts["rank_over_5"] += tt.rank > 5
            counts["fp32_ops"] += tt.dataType == fp32 and op.type != "cast"
            dims = [d.constant.size for d in tt.dimensions]
            if int(np.prod(dims)) > int(np.prod(largest or [0])):
                largest = dims
    flags = [
        {"rule": rule, "count": counts[rule], "what": ANE_RULES[rule][0], "source": ANE_RULES[rule][1]}
        for rule in ANE_RULES
        if counts[rule]
    ]
    return {"flags": flags, "max_rank": max_rank, "largest_intermediate": largest}


def _blob_offsets(ops: list) -> set[int]:
    """Offsets into weight.bin that the ops reference: const values (attributes) and the operands that iOS18
    compression ops (constexpr_*) take inline as bound values."""
    values = [v for op in ops for v in op.attributes.values()]
    values += [a.value for op in ops for arg in op.inputs.values() for a in arg.arguments if a.HasField("value")]
    return {v.blobFileValue.offset for v in values if v.WhichOneof("value") == "blobFileValue"}


def blob_bytes(weight_bin: bytes, offset: int) -> int:
    """Data size of the blob whose 64-byte record sits at `offset` (MIL blob storage v2:
    u32 0xDEADBEEF, u32 dtype, u64 size in bytes, u64 data offset)."""
    sentinel = int.from_bytes(weight_bin[offset : offset + 4], "little")
    if sentinel != 0xDEADBEEF:
        raise BundleError(f"weight.bin has no blob record at offset {offset}")
    return int.from_bytes(weight_bin[offset + 8 : offset + 16], "little")


def duplicate_blobs(pkg: Path) -> int:
    """How many referenced blobs in weight.bin repeat another one's dtype and bytes (0: nothing stored twice)."""
    model = load_spec(pkg)
    weight_bin = (Path(model.weights_dir) / "weight.bin").read_bytes()
    offsets = set().union(*map(_blob_offsets, function_ops(model.get_spec()).values()))
    seen = Counter()
    for offset in offsets:
        dtype = weight_bin[offset + 4 : offset + 8]
        start = int.from_bytes(weight_bin[offset + 16 : offset + 24], "little")
        seen[dtype, hashlib.sha256(weight_bin[start : start + blob_bytes(weight_bin, offset)]).digest()] += 1
    return sum(n - 1 for n in seen.values())


def describe(pkg: Path) -> dict[str, dict[str, Any]]:
    """Per function: MIL op histogram, compression ops, ANE flags, and the weight blobs it references (count,
    bytes, and how many it shares with another function)."""
    model = load_spec(pkg)
    spec = model.get_spec()
    weight_bin = (Path(model.weights_dir) / "weight.bin").read_bytes()
    ops = function_ops(spec)
    blobs = {name: _blob_offsets(fn_ops) for name, fn_ops in ops.items()}
    report = {}
    for f in spec.description.functions:
        fn_ops = ops[f.name]
        others = set().union(*(b for n, b in blobs.items() if n != f.name))
        report[f.name] = {
            "function": f.name,
            "op_histogram": dict(sorted(Counter(op.type for op in fn_ops if op.type != "const").items())),
            "compressed_weights": dict(
                sorted(Counter(op.type for op in fn_ops if op.type.startswith("constexpr_")).items())
            ),
            "weight_blobs": len(blobs[f.name]),
            "weight_blobs_shared": len(blobs[f.name] & others),
            "weight_bytes": sum(blob_bytes(weight_bin, offset) for offset in blobs[f.name]),
            "ane": ane_flags(fn_ops),
        }
    return report


# ---------------------------------------------------------------- the writer


def write_ios(
    units: list[ExportUnit], models: Models, recipe: Recipe, folder: Path, report: Reporter, calibration
) -> dict[str, dict]:
    """Write model.mlpackage into folder; returns {method: {"file", "function", "report", "inputs", "outputs"}}.

    `inputs`/`outputs` carry the dtypes the package really takes (Core ML has no int64 inputs: `tokens`
    becomes int32); the exporter writes them into the manifest so it describes the package.
    """
    from .. import __version__

    digests, taken = {}, {}
    with tempfile.TemporaryDirectory(prefix="elasticdit-coreml-") as tmp:
        singles: dict[str, Path] = {}
        for unit in units:
            report.stage(f"Core ML: converting {unit.method}")
            try:
                ep = coreml_program(unit)
            except Exception as exc:
                raise ExportError(
                    f"torch.export of {unit.method} failed: {type(exc).__name__}: {_first_line(exc)}"
                ) from exc
            digests[unit.method] = graph_digest(ep)
            mlmodel = convert(unit, ep, recipe.precision)
            if unit.kind == "denoise" and recipe.quantized:  # decode and encode_text stay float, as on Android
                report.stage(f"Core ML: {recipe.quantization} {unit.method}")
                mlmodel = compress(mlmodel, recipe, unit.method)
            desc = mlmodel.get_spec().description
            taken[unit.method] = (
                _as_taken(unit.inputs, feature_specs(desc.input)),
                _as_taken(unit.outputs, feature_specs(desc.output)),
            )
            singles[unit.method] = Path(tmp) / f"{unit.method}.mlpackage"
            with _quiet():
                mlmodel.save(str(singles[unit.method]))
            report.advance()
        report.stage("Core ML: merging the functions")
        default = next(u.method for u in units if u.kind == "denoise")
        merge(singles, folder / PACKAGE, default)
    canonicalize(
        folder / PACKAGE,
        {"elasticdit.tool_version": __version__, "elasticdit.recipe": recipe.name, "elasticdit.default": default},
    )
    described = describe(folder / PACKAGE)
    methods = {}
    for unit in units:
        info = described[unit.method]
        info["graph_sha256"] = digests[unit.method]
        info["precision"] = recipe.precision
        info["compression"] = recipe.quantization if unit.kind == "denoise" else "none"
        inputs, outputs = taken[unit.method]
        methods[unit.method] = {
            "file": PACKAGE,
            "function": unit.method,
            "report": info,
            "inputs": inputs,
            "outputs": outputs,
        }
    report.advance()
    return methods


def _as_taken(specs: list[TensorSpec], taken: list[dict[str, Any]]) -> list[TensorSpec]:
    if [s.name for s in specs] != [t["name"] for t in taken]:
        raise ExportError(f"Core ML renamed the features {[s.name for s in specs]} to {[t['name'] for t in taken]}")
    return [replace(s, dtype=t["dtype"]) for s, t in zip(specs, taken, strict=True)]


# ---------------------------------------------------------------- verify


def check_package(bundle: Path, manifest: dict[str, Any]) -> Path:
    """Function names, default function, and every function's input/output names, shapes and dtypes against
    the manifest (`BundleError` naming the first mismatch); returns the package path."""
    entries = _entries(manifest)
    files = {e["file"] for e in entries.values()}
    if len(files) != 1:
        raise BundleError(f"an iOS bundle holds one package; the manifest names {sorted(files)}")
    pkg = bundle / files.pop()
    spec = load_spec(pkg).get_spec()
    functions = [f.name for f in spec.description.functions]
    missing = [m for m in entries if m not in functions]
    extra = [f for f in functions if f not in entries]
    if missing or extra:
        raise BundleError(f"{pkg.name}: functions {functions} do not match the manifest's methods {list(entries)}")
    default = manifest["operating_points"][0]["method"]
    if spec.description.defaultFunctionName != default:
        raise BundleError(
            f"{pkg.name}: default function is '{spec.description.defaultFunctionName}', expected '{default}'"
        )
    for f in spec.description.functions:
        load_spec(pkg, f.name)  # each function loads on its own
        entry = entries[f.name]
        for side, features in (("inputs", f.input), ("outputs", f.output)):
            got = feature_specs(features)
            want = [
                {"name": s["name"], "shape": list(s["shape"]), "dtype": s.get("dtype", "float32")} for s in entry[side]
            ]
            if got != want:
                raise BundleError(f"{pkg.name}: function {f.name} {side} are {got}, the manifest says {want}")
    return pkg


def _entries(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = {p["method"]: dict(p, kind="denoise") for p in manifest["operating_points"]}
    for key, kind in (("decoder", "decode"), ("text_encoder", "encode_text")):
        if manifest.get(key):
            entries[manifest[key]["method"]] = dict(manifest[key], kind=kind)
    return entries


def rebuild_unit(models: Models, manifest: dict[str, Any], entry: dict[str, Any]) -> ExportUnit:
    """The unit the exporter converted for this manifest entry, rebuilt from the checkpoint."""
    recipe = manifest["recipe"]
    attention = recipe.get("lowering", {}).get("attention", "masked")
    resolution = tuple(manifest["resolution"])
    kind = _entries(manifest)[entry["method"]]["kind"]
    if kind == "denoise":
        point = OperatingPoint(entry["compression_ratio"], entry["depth"], tuple(entry["blocks"]))
        return denoise_unit(models, point, resolution, attention, entry["inputs"][0]["shape"][0])
    if kind == "decode":
        return decode_unit(models, resolution)
    return encode_text_unit(models)


_SUFFIXES = ("_to_fp16", "_to_fp32", "_quantized", "_palettized")


def package_weights(pkg: Path) -> dict[str, dict[str, np.ndarray]]:
    """{function: {const name without conversion suffixes: value}} for every blob-stored weight, constexpr
    compression ops decompressed by coremltools' own MIL reader (what Core ML materialises at load time)."""
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    model = load_spec(pkg)
    spec = model.get_spec()
    with _quiet():
        program = load_mil(spec, spec.specificationVersion, model.weights_dir)
    weights: dict[str, dict[str, np.ndarray]] = {}
    for name, function in program.functions.items():
        found = {}
        for op in function.operations:
            if (
                op.op_type == "const"
                and op.outputs[0].child_ops
                and op.outputs[0].child_ops[0].op_type.startswith("constexpr_")
            ):
                continue  # an operand of a compression op
            if op.op_type == "const":
                value = op.outputs[0].val
            elif op.op_type.startswith("constexpr_"):
                value = op.materialized_val_inference()
            else:
                continue
            if not isinstance(value, np.ndarray) or value.size < 2:
                continue
            key = op.name
            while key.endswith(_SUFFIXES):
                key = next(key.removesuffix(s) for s in _SUFFIXES if key.endswith(s))
            found[key] = value
        weights[name] = found
    return weights


def graph_inputs_from_package(
    ep: torch.export.ExportedProgram, weights: dict[str, np.ndarray]
) -> tuple[dict[str, torch.Tensor], int]:
    """Parameters and buffers of the program replaced by the package's values where a const maps to them
    (by placeholder name and shape); returns the overrides by FQN and how many of the program's tensors
    were found in the package."""
    values = {**ep.state_dict, **ep.constants}
    overrides = {}
    for s in ep.graph_signature.input_specs:
        if s.target is None or s.target not in values:
            continue
        found = weights.get(s.arg.name)
        if found is not None and list(found.shape) == list(values[s.target].shape):
            overrides[s.target] = torch.from_numpy(np.ascontiguousarray(found)).to(values[s.target].dtype)
    return overrides, len(overrides)


def fp32_island(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The FX nodes `convert` keeps in fp32 (see `keeps_fp32`): sin/cos and what feeds only them."""
    keep: set[torch.fx.Node] = set()
    for node in reversed(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in (torch.ops.aten.sin.default, torch.ops.aten.cos.default) or (
            node.users and all(user in keep for user in node.users)
        ):
            keep.add(node)
    return keep


class _Fp16Emulation(torch.fx.Interpreter):
    """Runs a graph the way Core ML's fp16 compute precision does: every float op in float16, except the
    fp32 island; float constants enter each op as stored (so fp16-cast weights are already rounded)."""

    def __init__(self, module: torch.fx.GraphModule):
        super().__init__(module)
        self.fp32 = fp32_island(module.graph)

    def run_node(self, n: torch.fx.Node):
        if n.op != "call_function":
            return super().run_node(n)
        dtype = torch.float32 if n in self.fp32 else torch.float16
        args, kwargs = self.fetch_args_kwargs_from_env(n)

        def cast(value):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value.to(dtype)
            if value is torch.float32:  # dtype= arguments (casts, factories)
                return dtype
            return value

        args, kwargs = torch.utils._pytree.tree_map(cast, (args, kwargs))
        return n.target(*args, **kwargs)


def run_graph(
    ep: torch.export.ExportedProgram, overrides: dict[str, torch.Tensor], inputs: list[torch.Tensor], half: bool
) -> list[torch.Tensor]:
    """Run the program's graph with parameters/buffers replaced by `overrides` (FQN -> tensor); `half`
    emulates Core ML's fp16 compute precision. Results are float32."""
    graph = copy.deepcopy(ep.module())  # never write into the checkpoint's shared parameters
    for fqn, value in overrides.items():
        owner, _, name = fqn.rpartition(".")
        holder = graph.get_submodule(owner) if owner else graph
        old = getattr(holder, name)
        setattr(holder, name, torch.nn.Parameter(value, False) if isinstance(old, torch.nn.Parameter) else value)
    examples = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"][-len(inputs) :]
    args = [t.to(e.dtype) if e is not None else t for t, e in zip(inputs, examples, strict=True)]
    with torch.no_grad():
        out = _Fp16Emulation(graph).run(*args) if half else graph(*args)
    out = list(out) if isinstance(out, tuple | list) else [out]
    return [o.float() for o in out]


def ios_runner(bundle: Path, manifest: dict[str, Any], models: Models):
    """`(entry, inputs) -> (outputs, note)` for `verify`; the package's structure is checked first."""
    pkg = check_package(bundle, manifest)
    if sys.platform == "darwin":  # pragma: no cover - needs the Core ML framework
        return _coreml_runner(pkg)
    precision = manifest["recipe"].get("coreml", {}).get("precision", "fp16")
    weights = package_weights(pkg)
    report = manifest.get("backend_report") or {}

    def run(entry: dict[str, Any], inputs: list[torch.Tensor]):
        method = entry["method"]
        ep = coreml_program(rebuild_unit(models, manifest, entry))
        want = (report.get(method) or {}).get("graph_sha256")
        if want and graph_digest(ep) != want:
            raise BundleError(
                f"the graph rebuilt for {method} differs from the one converted at export (sha256 "
                f"{graph_digest(ep)[:12]} != {want[:12]}); its numerics cannot be checked with this tool version"
            )
        overrides, found = graph_inputs_from_package(ep, weights[method])
        out = run_graph(ep, overrides, inputs, half=precision == "fp16")
        compute = "float16 (Core ML fp16 compute, emulated on CPU)" if precision == "fp16" else "float32"
        note = (
            f"Linux: ran the torch.export graph given to ct.convert in {compute} with {found} weight tensors "
            f"decoded from {pkg.name}; {MACOS_NOTE}"
        )
        return out, note

    return run


def _coreml_runner(pkg: Path):  # pragma: no cover - macOS only
    """Run each function with Core ML itself (CPU, GPU and Neural Engine as Core ML chooses)."""
    ct = _ct()
    loaded: dict[str, Any] = {}

    def run(entry: dict[str, Any], inputs: list[torch.Tensor]):
        method = entry["method"]
        if method not in loaded:
            loaded[method] = ct.models.MLModel(str(pkg), function_name=method)
        feeds = {
            spec["name"]: t.numpy().astype(DTYPES[spec.get("dtype", "float32")])
            for spec, t in zip(entry["inputs"], inputs, strict=True)
        }
        result = loaded[method].predict(feeds)
        out = [torch.from_numpy(np.asarray(result[s["name"]], dtype=np.float32)) for s in entry["outputs"]]
        return out, f"macOS: ran Core ML function {method} of {pkg.name}"

    return run
