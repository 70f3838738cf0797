"""The same elasticdit-run sources cross-compiled for aarch64 Linux against the aarch64 executorch wheel and run
under qemu-user: XNNPACK's NEON kernels, the ones phones run. Every method's outputs and the image must match
the x86 build's within float32 tolerance. Times measured under emulation are the emulator's and are not
looked at. A missing toolchain (g++-aarch64-linux-gnu, qemu-user-static) fails in CI and skips, saying so,
elsewhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_native_support import (
    PROMPT,
    compare_images,
    export,
    latent_shape,
    png,
    rel_error,
    runner_for,
)
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.generation import noise_for

TOLERANCE = 1e-4  # verify's max_rel_error for float32 bundles


@pytest.fixture(scope="module")
def host():
    return runner_for("host")


@pytest.fixture(scope="module")
def arm():
    return runner_for("linux-aarch64")


@pytest.fixture(scope="module")
def bundle(android_bundle):
    return android_bundle[0]


def method_figures(host, arm, bundle, tmp_path) -> dict[str, float]:
    """Every method on the same inputs (the x86 run's, reused by the aarch64 run): max relative error per output."""
    x86, a64 = tmp_path / "x86", tmp_path / "aarch64"
    index = host.methods(bundle, x86)
    assert arm.methods(bundle, a64, inputs=x86) == index
    figures = {}
    for m in index["methods"]:
        for k in range(m["inputs"]):  # the aarch64 run read the x86 inputs and wrote none of its own
            assert not (a64 / f"{m['method']}.in{k}.npy").exists()
        for k in range(m["outputs"]):
            want, got = np.load(x86 / f"{m['method']}.out{k}.npy"), np.load(a64 / f"{m['method']}.out{k}.npy")
            assert got.shape == want.shape and np.isfinite(got).all()
            figures[f"{m['method']}.out{k}"] = rel_error(got, want)
    return figures


def image_figures(host, arm, bundle, tmp_path, op: str, steps: int) -> dict[str, float]:
    noise = noise_for(11, latent_shape(bundle)).numpy()
    docs = {}
    for name, runner in (("x86", host), ("aarch64", arm)):
        out = tmp_path / f"img-{name}"
        out.mkdir()
        docs[name] = runner.generate(
            bundle, PROMPT, noise, out / "image.png", op=op, steps=steps, dump=out, warm_load=False
        )
    assert docs["aarch64"]["runner"]["arch"] == "aarch64" and docs["aarch64"]["emulated"] is True
    assert docs["x86"]["runner"]["arch"] != "aarch64" and docs["x86"]["emulated"] is False
    figures = compare_images(png(tmp_path / "img-x86" / "image.png"), png(tmp_path / "img-aarch64" / "image.png"))
    for name in ("latent", "image", "text", "pooled"):
        figures[f"{name}_rel_error"] = rel_error(
            np.load(tmp_path / "img-aarch64" / f"{name}.npy"), np.load(tmp_path / "img-x86" / f"{name}.npy")
        )
    return figures


def check(figures: dict[str, float], label: str) -> None:
    print(f"\n{label}: {json.dumps(figures, indent=1)}")  # the figures the report quotes (pytest -s)
    errors = {k: v for k, v in figures.items() if k.endswith("rel_error") or ".out" in k}
    assert all(v <= TOLERANCE for v in errors.values()), errors
    if "psnr_db" in figures:
        assert figures["psnr_db"] >= 45 and figures["within_1_lsb"] >= 0.99, figures


def test_every_method_matches_x86(host, arm, bundle, tmp_path):
    figures = method_figures(host, arm, bundle, tmp_path)
    assert set(figures) == {
        "encode_text.out0",
        "encode_text.out1",
        "denoise_r1_d4.out0",
        "denoise_r2_d2.out0",
        "decode.out0",
    }
    check(figures, "aarch64 vs x86, tiny bundle, every method")
    # the comparison can fail: a perturbation of one element at float32 scale is caught
    want = np.load(tmp_path / "x86" / "decode.out0.npy")
    wrong = want.copy()
    wrong.flat[7] += 1e-3 * np.abs(want).max()
    assert rel_error(wrong, want) > TOLERANCE


def test_image_matches_x86(host, arm, bundle, tmp_path):
    check(image_figures(host, arm, bundle, tmp_path, "r1_d4", 2), "aarch64 vs x86, tiny bundle, r1_d4 2 steps")


@pytest.mark.slow
def test_demo_bundle_on_aarch64(host, arm, tmp_path_factory, tmp_path):
    """The demo checkpoint's lightest point (and its text encoder and decoder), 2 steps with guidance: the image
    and every method under emulation (~25 s of qemu), and the x86 image against `generate` (Python runtime)."""
    from elasticdit.demo_checkpoint import demo_checkpoint_path

    bundle = export(demo_checkpoint_path(), tmp_path_factory.getbasetemp() / "demo-r4_d3", "--ops", "r4_d3")
    check(method_figures(host, arm, bundle, tmp_path), "aarch64 vs x86, demo r4_d3, every method")
    check(image_figures(host, arm, bundle, tmp_path, "r4_d3", 2), "aarch64 vs x86, demo r4_d3 2 steps")
    result = CliRunner().invoke(
        app,
        ["generate", str(bundle), "--prompt", PROMPT, "--seed", "11", "--steps", "2", "-o", str(tmp_path / "py.png")],
    )
    assert result.exit_code == 0, result.output + result.stderr
    python_vs_native = compare_images(png(tmp_path / "py.png"), png(tmp_path / "img-x86" / "image.png"))
    check(python_vs_native, "x86 elasticdit-run vs generate (Python runtime), demo r4_d3 2 steps")
