"""`generate` and `eval` on a tiny random checkpoint and its bundles: same seed same image, the bundle path
matches the PyTorch reference, the JSON shape of `eval`, and one-line errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from elasticdit.cli import app

runner = CliRunner()
OP = "r2_d2"  # the cheapest point of the tiny config: 4x4 tokens, two blocks


def invoke(args: list[str]):
    result = runner.invoke(app, args)
    return result


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    """conftest's tiny checkpoint: random weights with a text encoder, and latent scaling/shift factors that are not
    the identity, so the bundle path's unscaling before `decode` is exercised."""
    return tiny_ckpt


def export(ckpt, target: str, out, extra: list[str] = ()) -> None:
    result = invoke(["export", str(ckpt), "--target", target, "--ops", OP, "-o", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output + result.stderr


@pytest.fixture(scope="module")
def android(android_bundle):
    return android_bundle[0]  # conftest's: android-fp32 with r1_d4 and OP


def generate(source, out, seed: int = 7, extra: list[str] = ()) -> dict:
    args = ["generate", str(source), "--prompt", "a red circle left of a blue square", "--op", OP, "--steps", "3"]
    result = invoke([*args, "--seed", str(seed), "-o", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def test_checkpoint_same_seed_same_image(ckpt, tmp_path):
    summary = generate(ckpt, tmp_path / "a.png")
    generate(ckpt, tmp_path / "b.png")
    generate(ckpt, tmp_path / "c.png", seed=8)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()
    assert Image.open(tmp_path / "a.png").size == (128, 128)
    assert summary["kind"] == "checkpoint" and summary["operating_point"] == OP and summary["steps"] == 3
    assert summary["guidance"] == 3.0 and summary["seed"] == 7 and summary["gflops"] > 0  # the scheduler's cfg


def test_android_bundle_same_seed_same_image_and_matches_the_reference(ckpt, android, tmp_path):
    summary = generate(android, tmp_path / "a.png")
    generate(android, tmp_path / "b.png")
    generate(ckpt, tmp_path / "ref.png")
    assert summary["kind"] == "android"
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    # ExecuTorch/XNNPACK vs PyTorch float32: same tokens, noise, sampler and unscaling, up to rounding
    assert np.abs(pixels(tmp_path / "a.png") - pixels(tmp_path / "ref.png")).max() <= 2
    # guidance 1 skips the unconditional pass; still deterministic and different from the guided image
    generate(android, tmp_path / "nocfg.png", extra=["--cfg", "1"])
    assert (tmp_path / "nocfg.png").read_bytes() != (tmp_path / "a.png").read_bytes()


@pytest.mark.slow
def test_cfg_batched_bundle_matches_the_unbatched_one(ckpt, android, tmp_path):
    out = tmp_path / "cfg-bundle"
    export(ckpt, "android", out, ["--cfg"])
    generate(out, tmp_path / "batched.png")
    generate(android, tmp_path / "two-calls.png")
    assert np.abs(pixels(tmp_path / "batched.png") - pixels(tmp_path / "two-calls.png")).max() <= 2


def test_onnx_bundle_same_seed_same_image(ckpt, onnx_bundle, tmp_path):
    out, _ = onnx_bundle
    summary = generate(out, tmp_path / "a.png")
    generate(out, tmp_path / "b.png")
    generate(ckpt, tmp_path / "ref.png")
    assert summary["kind"] == "onnx"
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert np.abs(pixels(tmp_path / "a.png") - pixels(tmp_path / "ref.png")).max() <= 2


def test_eval_json_shape(ckpt):
    args = ["eval", str(ckpt), "--prompts", "3", "--ops", f"{OP},r1_d2", "--steps", "2", "--json"]
    result = invoke(args)
    assert result.exit_code == 0, result.output + result.stderr
    doc = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    rows = doc["operating_points"]
    assert [r["name"] for r in rows] == ["r1_d2", OP]  # canonical order, heaviest first
    for row in rows:
        assert {"name", "gflops", "score", "per_category", "score_std", "n", "passed"} <= set(row)
        assert {"strict_score", "strict_score_std", "strict_per_category", "strict_passed"} <= set(row)
        assert 0.0 <= row["score"] <= 1.0 and row["n"] == 3 and row["gflops"] > 0
        assert 0.0 <= row["strict_score"] <= row["score"] and row["strict_passed"] <= row["passed"]
        assert set(row["per_category"]) == {"single_object", "counting", "two_objects"}  # the first 3 prompts
        assert set(row["strict_per_category"]) == set(row["per_category"])
    assert rows[0]["gflops"] > rows[1]["gflops"]
    assert doc["prompts"] == 3 and doc["steps"] == 2 and doc["kind"] == "checkpoint"


def test_eval_on_a_checkpoint_reports_the_deployed_graphs_gflops(ckpt):
    """The lowered SSBA graph's cost, as `inspect` and the exported manifest count it, not the masked reference's
    (which computes every attention score and masks the skipped ones)."""
    from elasticdit.checkpoint import load_checkpoint
    from elasticdit.inspection import inspect_models

    result = invoke(["eval", str(ckpt), "--prompts", "1", "--steps", "1", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    rows = {r["name"]: r["gflops"] for r in json.loads(result.stdout)["operating_points"]}
    inspected = {p["name"]: p for p in inspect_models(load_checkpoint(ckpt).models())["operating_points"]}
    assert inspected["r1_d2"]["attention"] == "tiles"
    assert rows == pytest.approx({name: p["gflops"] for name, p in inspected.items()}, rel=1e-9)
    assert rows["r1_d2"] < 0.95 * inspected["r1_d2"]["gflops_dense"]  # SSBA skips tiles at ratio 1


def test_eval_on_a_bundle_takes_gflops_from_the_manifest(android):
    result = invoke(["eval", str(android), "--prompts", "1", "--steps", "1", "--ops", OP, "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    manifest = json.loads((android / "manifest.json").read_text())
    (row,) = json.loads(result.stdout)["operating_points"]
    point = next(p for p in manifest["operating_points"] if p["name"] == OP)
    assert row["name"] == OP and row["gflops"] == point["gflops"]


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--prompt", "a red circle", "--op", "r9_d9", "-o", "x.png"],
        ["eval", "--prompts", "1", "--ops", "r9_d9"],
    ],
)
def test_bad_operating_point_is_one_line(ckpt, android, args):
    for source in (ckpt, android):
        result = invoke([args[0], str(source), *args[1:]])
        assert result.exit_code == 1 and result.stderr.startswith("error: unknown operating point 'r9_d9'")
        assert "valid: " in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_source_and_settings_are_one_line(tmp_path, ckpt):
    result = invoke(["generate", str(tmp_path / "missing"), "--prompt", "a red circle", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = invoke(["generate", str(ckpt), "--prompt", "a red circle", "--steps", "0", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and result.stderr.startswith("error: --steps must be positive")
