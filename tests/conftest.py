"""Shared fixtures: small random checkpoints and one bundle per target, each made once per session (exports are
the suite's most expensive step: reuse these unless a test needs another recipe or checkpoint)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from configs import tiny_config
from typer.testing import CliRunner

from elasticdit.checkpoint import save_checkpoint
from elasticdit.cli import app
from elasticdit.model.pipeline import random_weights

pytest_plugins = ["ci_skips"]
torch.set_num_threads(2)


OPS = "r1_d4,r2_d2"  # the session bundles' points: a sparse one (ratio 1's 4x4 tile grid) and a dense one


def write_tiny(path: Path, seed: int = 0, latent_scaling: tuple[float, float] | None = None, **kwargs) -> Path:
    cfg = tiny_config(**kwargs)
    if latent_scaling is not None:
        scale, shift = latent_scaling
        cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, scaling_factor=scale, shift_factor=shift))
    save_checkpoint(path, cfg, random_weights(cfg, seed))
    return path


def export_cli(ckpt: Path, target: str, out: Path, *args: str) -> dict:
    """`elasticdit export ... --json` through the CLI; the summary it prints."""
    cmd = ["export", str(ckpt), "--target", target, "-o", str(out), "--json", *args]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """Ratios 1/2 at 128 px (token grids 8x8 and 4x4), SSBA tile 2, text encoder, T-DVAE with encoder; latent
    scaling and shift factors that are not the identity, so a bundle's unscaling before `decode` is exercised."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return write_tiny(path, latent_scaling=(1.7, 0.2), text_encoder=True)


@pytest.fixture(scope="session")
def android_bundle(tiny_ckpt, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny checkpoint's Android bundle (android-fp32, OPS): its folder and the export summary."""
    out = tmp_path_factory.mktemp("android") / "bundle"
    return out, export_cli(tiny_ckpt, "android", out, "--ops", OPS)


@pytest.fixture(scope="session")
def android_cfg_bundle(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint's Android bundle with CFG-batched (batch 2) denoise methods (`--cfg`, manifest cfg_batch
    true) at r2_d2: its folder."""
    out = tmp_path_factory.mktemp("android-cfg") / "bundle"
    export_cli(tiny_ckpt, "android", out, "--ops", "r2_d2", "--cfg")
    return out


@pytest.fixture(scope="session")
def ios_bundle(tiny_ckpt, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ios") / "bundle"
    return out, export_cli(tiny_ckpt, "ios", out, "--ops", OPS)


@pytest.fixture(scope="session")
def onnx_bundle(tiny_ckpt, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx") / "bundle"
    return out, export_cli(tiny_ckpt, "onnx", out, "--ops", OPS)


SCHEDULES = {"fast": "r2_d2:0.5,r1_d4:0.5", "rich": "r1_d4:0.75,r2_d2:0.25"}  # named schedules of OPS' points


@pytest.fixture(scope="session")
def onnx_reexport(tiny_ckpt, onnx_bundle, tmp_path_factory) -> tuple[Path, dict]:
    """`onnx_bundle` exported again, with SCHEDULES named (`--schedule`): every file but the manifest must be
    byte-identical to the first export's and the manifest equal but for its `schedules` key. One re-export serves
    test_onnx_export's determinism test and test_schedules' recording test."""
    out = tmp_path_factory.mktemp("onnx-again") / "bundle"
    named = [a for name, spec in SCHEDULES.items() for a in ("--schedule", f"{name}={spec}")]
    return out, export_cli(tiny_ckpt, "onnx", out, "--ops", OPS, *named)


@pytest.fixture(scope="session")
def bare_ckpt(tmp_path_factory) -> Path:
    """The tiny transformer alone (no decoder, no text encoder): bundles of denoise methods only."""
    return write_tiny(tmp_path_factory.mktemp("bare") / "bare.safetensors", vae=False)


@pytest.fixture(scope="session")
def native():
    """elasticdit-run built for this host (runtime/, docs/runtime.md), looked up once per session for every native
    test: built on demand, cached on disk keyed by its sources and toolchain; a missing toolchain is a skip saying
    why (a failure in CI)."""
    from test_native_support import runner_for

    return runner_for("host")
