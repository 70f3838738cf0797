"""Wrong bundles for verify's mutation tests: exported by the real pipeline with one fault injected, the
manifest left as the correct export would write it (docs/design.md, "verify")."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

import elasticdit.exporter as exporter
from elasticdit.checkpoint import load_checkpoint, save_checkpoint
from elasticdit.operating_points import OperatingPoint

MUTATIONS = ("dense_attention", "dropped_block", "perturbed_weights")


@contextmanager
def injected(monkeypatch, mutation: str):
    """During an export: every denoise method lowered with dense attention, or without its last block."""
    original = exporter.export_units

    def dense(models, points, resolutions, attention, batch=1):
        return original(models, points, resolutions, "dense", batch)

    def dropped(models, points, resolutions, attention, batch=1):
        units = original(models, points, resolutions, attention, batch)
        for unit in units:
            if unit.point is not None:
                short = OperatingPoint(unit.point.ratio, unit.point.depth, unit.point.blocks[:-1])
                unit.module = models.transformer.operating_point(short, unit.module.resolution, attention).eval()
        return units

    with monkeypatch.context() as m:
        if mutation == "dense_attention":
            m.setattr(exporter, "export_units", dense)
        elif mutation == "dropped_block":
            m.setattr(exporter, "export_units", dropped)
        yield


def perturbed_checkpoint(ckpt: Path, out: Path, scale: float = 0.01, seed: int = 0) -> Path:
    """The checkpoint with every floating weight multiplied by (1 + scale * N(0, 1)), elementwise."""
    ck = load_checkpoint(ckpt)
    g = torch.Generator().manual_seed(seed)
    weights = {
        k: v * (1 + scale * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v
        for k, v in ck.tensors.items()
    }
    save_checkpoint(out, ck.cfg, weights)
    return out


def claim_checkpoint(bundle: Path, ckpt: Path) -> None:
    """Rewrite the manifest's checkpoint_sha256 to `ckpt`'s (the bundle then claims to come from it)."""
    path = bundle / "manifest.json"
    doc = json.loads(path.read_text())
    doc["checkpoint_sha256"] = load_checkpoint(ckpt).sha256
    path.write_text(json.dumps(doc, indent=2) + "\n")
