"""Reading a Core ML package: its functions and features, the weights it stores (decoded as Core ML would at
load time), and the report of each function (MIL op histogram, compression ops, Neural Engine flags, weight
blobs). Checking a package against the manifest."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BundleError, first_line
from ...quiet import python_output_captured
from .ct import coremltools

PACKAGE_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "INT32": "int32", "DOUBLE": "float64"}

# Facts the report counts, each with the published source it comes from (docs/ios.md has the full table).
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


def load_spec(pkg: Path, function: str | None = None):
    ct = coremltools()
    try:
        with python_output_captured():
            return ct.models.MLModel(str(pkg), skip_model_load=True, function_name=function)
    except Exception as exc:
        what = f"function '{function}' of " if function else ""
        raise BundleError(f"cannot read {what}{pkg.name}: {first_line(exc)}") from None


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


def package_functions(manifest: Any) -> dict[str, dict[str, Any]]:
    """file -> {function: entry with `inputs` / `outputs`}, in manifest order: every method, a chunked point as
    its pieces (`PointEntry.chunks`)."""
    files: dict[str, dict[str, Any]] = {}
    for entry in manifest.methods():
        for piece in getattr(entry, "chunks", None) or [entry]:
            files.setdefault(piece.file, {})[getattr(piece, "function", None) or entry.method] = piece
    return files


def check_package(bundle: Path, manifest: Any) -> dict[str, Path]:
    """Each package's function names, default function, and every function's input/output names, shapes and dtypes
    against the manifest (`BundleError` naming the first mismatch); returns the packages by manifest file name.

    One package (`model.mlpackage`) holds every method; a chunked bundle holds one per block range, each with its
    pieces' functions (and the first with decode / encode_text). A package's default function is its first."""
    packages = {}
    for file, entries in package_functions(manifest).items():
        pkg = bundle / file
        spec = load_spec(pkg).get_spec()
        functions = [f.name for f in spec.description.functions]
        if sorted(functions) != sorted(entries):
            raise BundleError(f"{pkg.name}: functions {functions} do not match the manifest's methods {list(entries)}")
        default = next(iter(entries))
        if spec.description.defaultFunctionName != default:
            raise BundleError(
                f"{pkg.name}: default function is '{spec.description.defaultFunctionName}', expected '{default}'"
            )
        for f in spec.description.functions:
            load_spec(pkg, f.name)  # each function loads on its own
            entry = entries[f.name]
            for side, features in (("inputs", f.input), ("outputs", f.output)):
                got = feature_specs(features)
                want = [s.to_dict() for s in getattr(entry, side)]
                if got != want:
                    raise BundleError(f"{pkg.name}: function {f.name} {side} are {got}, the manifest says {want}")
        packages[file] = pkg
    return packages


_SUFFIXES = ("_to_fp16", "_to_fp32", "_quantized", "_palettized")


def package_weights(pkg: Path) -> dict[str, dict[str, np.ndarray]]:
    """{function: {const name without conversion suffixes: value}} for every blob-stored weight, constexpr
    compression ops decompressed by coremltools' own MIL reader (what Core ML materialises at load time)."""
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    model = load_spec(pkg)
    spec = model.get_spec()
    with python_output_captured():
        program = load_mil(spec, spec.specificationVersion, model.weights_dir)
    return program_weights(program)


def program_weights(program: Any) -> dict[str, dict[str, np.ndarray]]:
    """{function: {const name without conversion suffixes: value}} of a MIL program, constexpr ops decompressed."""
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
