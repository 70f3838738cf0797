"""`verify`: a bundle's hashes, structure, and every method's numerics against the PyTorch reference."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .bundle.manifest import Manifest, MethodEntry, PointEntry
from .bundle.reader import read_bundle
from .checkpoint import load_checkpoint
from .errors import BundleError, CheckpointError
from .model.pipeline import Models
from .quant import applies
from .recipes import Recipe
from .specs import MethodKind, example_inputs

DEFAULT_MAX_REL_ERROR = 1e-4
DEFAULT_MIN_SNR_DB = 30.0


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


def verification_inputs(models: Models, entry: MethodEntry, seed: int = 7) -> list[torch.Tensor]:
    """Seeded inputs of the manifest's shapes; denoise gets real text embeddings when a text encoder exists."""
    inputs = list(example_inputs(entry.inputs, seed))
    if entry.kind == MethodKind.DENOISE and models.text_encoder is not None:
        batch = inputs[0].shape[0]
        with torch.no_grad():
            text, pooled = models.encode_prompt("two red circles above a blue square")
        inputs[2], inputs[3] = text.expand(batch, -1, -1).contiguous(), pooled.expand(batch, -1).contiguous()
    return inputs


@torch.no_grad()
def reference(models: Models, entry: MethodEntry, manifest: Manifest, inputs: list[torch.Tensor]):
    """The PyTorch reference of a method: masked SSBA attention (docs/design.md, "SSBA"), float32."""
    if isinstance(entry, PointEntry):
        resolution = entry.resolution or manifest.resolution
        net = models.transformer.operating_point(entry.point, resolution, "masked")
        return [net(*inputs)]
    if entry.kind == MethodKind.DECODE:
        return [models.vae.decode(inputs[0])]
    return list(models.text_encoder(inputs[0]))


def resolve_checkpoint(manifest: Manifest, checkpoint: Path | None) -> Path:
    from .bundle.files import sha256_file
    from .demo_checkpoint import demo_checkpoint_path

    if checkpoint is not None:
        return checkpoint
    demo = demo_checkpoint_path()
    if sha256_file(demo) == manifest.checkpoint_sha256:
        return demo
    raise CheckpointError("the bundle was not exported from the demo checkpoint; pass --checkpoint CKPT")


def judge(
    recipe: Recipe, kind: MethodKind, out: list[torch.Tensor], ref: list[torch.Tensor], method: str, note: str = ""
) -> MethodCheck:
    """SNR against the float reference for the methods the recipe quantizes, relative error for the others."""
    if applies(recipe.quantization, kind):
        value = min(snr_db(o, r) for o, r in zip(out, ref, strict=True))
        limit = float(recipe.min_snr_db if recipe.min_snr_db is not None else DEFAULT_MIN_SNR_DB)
        return MethodCheck(method, str(kind), "snr_db", value, limit, value >= limit, note)
    value = max(rel_err(o, r) for o, r in zip(out, ref, strict=True))
    limit = float(recipe.max_rel_error if recipe.max_rel_error is not None else DEFAULT_MAX_REL_ERROR)
    return MethodCheck(method, str(kind), "rel_err", value, limit, value <= limit, note)


def verify_bundle(bundle: str | Path, checkpoint: Path | None = None, threads: int | None = None) -> dict[str, Any]:
    opened = read_bundle(bundle, check=False)
    manifest = opened.manifest
    files = opened.check_files()
    ck = load_checkpoint(resolve_checkpoint(manifest, checkpoint), tuple(manifest.resolution))
    if ck.sha256 != manifest.checkpoint_sha256:
        raise CheckpointError(
            f"{ck.path} (sha256 {ck.sha256[:12]}) is not the checkpoint this bundle was exported from "
            f"({manifest.checkpoint_sha256[:12]})"
        )
    models = ck.models()
    runner = opened.target.host_runner(opened.path, manifest, threads, models)
    checks = []
    for entry in manifest.methods():
        inputs = verification_inputs(models, entry)
        ref = reference(models, entry, manifest, inputs)
        out = runner.run(entry, inputs)
        for o, spec in zip(out, entry.outputs, strict=True):
            if list(o.shape) != list(spec.shape):
                raise BundleError(
                    f"{entry.method} returned {spec.name} of shape {list(o.shape)}, manifest says {spec.shape}"
                )
        checks.append(judge(manifest.recipe, entry.kind, out, ref, entry.method, runner.note(entry)))
    return {
        "bundle": str(opened.path),
        "target": manifest.target,
        "recipe": manifest.recipe.name,
        "files": files,
        "methods": [asdict(c) for c in checks],
        "passed": all(c.passed for c in checks),
    }
