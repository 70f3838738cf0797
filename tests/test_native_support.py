"""Helpers shared by the native runtime tests (no tests here): the elasticdit-run builds (cached across sessions
in the user cache, so a CI run builds each once), the bundles they run, image comparison."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from elasticdit.cli import app

PROMPT = "a red circle left of a blue square"


def unavailable(reason: str):
    """A missing toolchain: a skip that says why (in CI, which installs it, tests/ci_skips.py makes it a failure)."""
    pytest.skip(reason)


def runner_for(target: str):
    from elasticdit.native.errors import NativeBuildError
    from elasticdit.native.run import NativeRunner

    try:
        return NativeRunner.for_target(target)
    except NativeBuildError as exc:
        unavailable(str(exc))


def export(ckpt: Path, out: Path, *args: str) -> Path:
    if not (out / "manifest.json").exists():
        result = CliRunner().invoke(app, ["export", str(ckpt), "--target", "android", "-o", str(out), "--json", *args])
        assert result.exit_code == 0, result.output + result.stderr
    return out


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB")).astype(np.int16)


def compare_images(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    mse = float((diff**2).mean())
    return {
        "psnr_db": float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse),
        "within_1_lsb": float((diff <= 1).mean()),
        "max_lsb": float(diff.max()),
    }


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (verify's measure)."""
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-12))


def latent_shape(bundle: Path) -> list[int]:
    doc = json.loads((bundle / "manifest.json").read_text())
    shape = list(next(s["shape"] for s in doc["operating_points"][0]["inputs"] if s["name"] == "latent"))
    return [1, *shape[1:]]


def assert_methods_equal(
    index: dict, folder: Path, run: Callable[[str, list[torch.Tensor]], list[torch.Tensor]]
) -> None:
    """Every method `elasticdit-run methods` ran (`index`; its inputs and outputs saved as .npy in `folder`) gives
    what `run(method, inputs)` gives on the same inputs, to float32 tolerance."""
    for m in index["methods"]:
        inputs = [torch.from_numpy(np.load(folder / f"{m['method']}.in{k}.npy")) for k in range(m["inputs"])]
        want = run(m["method"], inputs)
        for k in range(m["outputs"]):
            got = np.load(folder / f"{m['method']}.out{k}.npy")
            np.testing.assert_allclose(got, want[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=m["method"])
