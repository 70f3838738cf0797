"""`verify`: a bundle's hashes, structure, and every method's numerics against the PyTorch reference."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint
from .errors import BundleError, CheckpointError
from .manifest import TensorSpec, check_files, read_manifest
from .model.pipeline import Models
from .operating_points import OperatingPoint
from .slicing import example_inputs

DEFAULT_MAX_REL_ERROR = 1e-4


@dataclass
class MethodCheck:
    method: str
    kind: str
    metric: str  # "rel_err" (float recipes) or "snr_db" (quantized denoise methods)
    value: float
    limit: float
    passed: bool
    note: str = ""


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


def snr_db(out: torch.Tensor, ref: torch.Tensor) -> float:
    noise = float((out.double() - ref.double()).norm())
    return math.inf if noise == 0 else 20 * math.log10(float(ref.double().norm()) / noise)


def specs(entries: list[dict]) -> list[TensorSpec]:
    return [TensorSpec(e["name"], list(e["shape"]), e.get("dtype", "float32")) for e in entries]


def method_table(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, entry) for every method the manifest lists, denoise first."""
    rows = [("denoise", p) for p in manifest["operating_points"]]
    if manifest.get("decoder"):
        rows.append(("decode", manifest["decoder"]))
    if manifest.get("text_encoder"):
        rows.append(("encode_text", manifest["text_encoder"]))
    return rows


def verification_inputs(models: Models, kind: str, entry: dict[str, Any], seed: int = 7) -> list[torch.Tensor]:
    """Seeded inputs of the manifest's shapes; denoise gets real text embeddings when a text encoder exists."""
    inputs = list(example_inputs(kind, specs(entry["inputs"]), seed))
    if kind == "denoise" and models.text_encoder is not None:
        batch = inputs[0].shape[0]
        with torch.no_grad():
            text, pooled = models.encode_prompt("two red circles above a blue square")
        inputs[2], inputs[3] = text.expand(batch, -1, -1).contiguous(), pooled.expand(batch, -1).contiguous()
    return inputs


@torch.no_grad()
def reference(models: Models, kind: str, entry: dict[str, Any], manifest: dict, inputs: list[torch.Tensor]):
    """The PyTorch reference of a method: masked SSBA attention (DESIGN's semantics), float32."""
    if kind == "denoise":
        point = OperatingPoint(entry["compression_ratio"], entry["depth"], tuple(entry["blocks"]))
        net = models.transformer.operating_point(point, tuple(manifest["resolution"]), "masked")
        return [net(*inputs)]
    if kind == "decode":
        return [models.vae.decode(inputs[0])]
    return list(models.text_encoder(inputs[0]))


def resolve_checkpoint(manifest: dict[str, Any], checkpoint: Path | None) -> Path:
    from .demo_checkpoint import demo_checkpoint_path

    if checkpoint is not None:
        return checkpoint
    demo = demo_checkpoint_path()
    from .bundle import sha256_file

    if sha256_file(demo) == manifest["checkpoint_sha256"]:
        return demo
    raise CheckpointError("the bundle was not exported from the demo checkpoint; pass --checkpoint CKPT")


def judge(
    recipe: dict[str, Any], kind: str, out: list[torch.Tensor], ref: list[torch.Tensor], method: str, note: str = ""
) -> MethodCheck:
    quantized = recipe.get("quantization", {}).get("scheme", "none") != "none"
    limits = recipe.get("verify", {})
    if quantized and kind == "denoise":
        value = min(snr_db(o, r) for o, r in zip(out, ref, strict=True))
        limit = float(limits.get("min_snr_db", 30.0))
        return MethodCheck(method, kind, "snr_db", value, limit, value >= limit, note)
    value = max(rel_err(o, r) for o, r in zip(out, ref, strict=True))
    limit = float(limits.get("max_rel_error", DEFAULT_MAX_REL_ERROR))
    return MethodCheck(method, kind, "rel_err", value, limit, value <= limit, note)


def _runner(bundle: Path, manifest: dict[str, Any], threads: int | None, models: Models):
    target = manifest["target"]
    if target == "android":
        from .runners.executorch_host import ExecuTorchProgram

        programs: dict[str, ExecuTorchProgram] = {}

        def run(entry, inputs):
            file = entry["file"]
            if file not in programs:
                programs[file] = ExecuTorchProgram(bundle / file, threads)
            return programs[file].run(entry["method"], inputs)

        return run
    if target == "onnx":
        from .runners.onnx_host import OnnxBundle

        onnx = OnnxBundle(bundle, manifest, threads)
        return lambda entry, inputs: onnx.run(entry["method"], inputs)
    from .targets.ios import ios_runner

    return ios_runner(bundle, manifest, models)


def verify_bundle(bundle: str | Path, checkpoint: Path | None = None, threads: int | None = None) -> dict[str, Any]:
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    files = check_files(bundle, manifest)
    bad = [f for f in files if not f["ok"]]
    if bad:
        raise BundleError(
            f"{bundle}: {bad[0]['path']}: {bad[0]['problem']}"
            + (f" (and {len(bad) - 1} more files)" if len(bad) > 1 else "")
        )
    ck = load_checkpoint(resolve_checkpoint(manifest, checkpoint), tuple(manifest["resolution"]))
    if ck.sha256 != manifest["checkpoint_sha256"]:
        raise CheckpointError(
            f"{ck.path} (sha256 {ck.sha256[:12]}) is not the checkpoint this bundle was exported from "
            f"({manifest['checkpoint_sha256'][:12]})"
        )
    models = ck.models()
    run = _runner(bundle, manifest, threads, models)
    checks = []
    for kind, entry in method_table(manifest):
        inputs = verification_inputs(models, kind, entry)
        ref = reference(models, kind, entry, manifest, inputs)
        result = run(entry, inputs)
        out, note = result if isinstance(result, tuple) else (result, "")
        for o, spec in zip(out, entry["outputs"], strict=True):
            if list(o.shape) != list(spec["shape"]):
                raise BundleError(
                    f"{entry['method']} returned {spec['name']} of shape {list(o.shape)}, manifest says {spec['shape']}"
                )
        checks.append(judge(manifest["recipe"], kind, out, ref, entry["method"], note))
    return {
        "bundle": str(bundle),
        "target": manifest["target"],
        "recipe": manifest["recipe"].get("name"),
        "files": files,
        "methods": [asdict(c) for c in checks],
        "passed": all(c.passed for c in checks),
    }
