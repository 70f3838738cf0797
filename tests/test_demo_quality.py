"""The embedded demo checkpoint's quality, guarded: it clears a floor on held-out prompts at its full and lightest
points under both rules, and random weights of the same config do not. And the decoder GFLOPs of
benchmarks/demo_decoders.py are counted on the image size each decoder really decodes.

`python tests/test_demo_quality.py [CHECKPOINT]` prints the guard's scores (what MEASURED holds for the embedded one).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from elasticdit.checkpoint import load_checkpoint
from elasticdit.demo_checkpoint import demo_checkpoint_path, write_random_demo
from elasticdit.evaluation import evaluate_source
from elasticdit.operating_points import full_point, lightest_point

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"

# The guard: `elasticdit eval`'s first GUARD_PROMPTS held-out prompts (noise seeds 0..GUARD_PROMPTS-1), the
# checkpoint's own 20 steps and guidance 4. MEASURED: the embedded checkpoint's scores on exactly these prompts and
# seeds (`python tests/test_demo_quality.py`, checkpoint sha256 in MEASURED_ON). A floor is MEASURED less
# FLOOR_MARGIN, so float rounding on another machine (a few images flipping) does not fail it, while a broken
# checkpoint, sampler, text path or decoder does (random weights score 0 under both rules).
GUARD_PROMPTS = 32
MEASURED_ON = "2b19dc8ffe8b"
MEASURED = {  # r1_d6 and r4_d3: 25 and 16 of 32 prompts pass both rules
    "full": {"score": 0.78125, "strict_score": 0.78125},
    "lightest": {"score": 0.5, "strict_score": 0.5},
}
FLOOR_MARGIN = 0.125  # 4 of 32 prompts


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def guard_scores(checkpoint: Path) -> dict[str, dict[str, float]]:
    """{"full"|"lightest": {"score", "strict_score"}} on the guard's prompts."""
    cfg = load_checkpoint(checkpoint).cfg
    points = {"full": full_point(cfg).name, "lightest": lightest_point(cfg).name}
    report = evaluate_source(checkpoint, GUARD_PROMPTS, list(points.values()), progress=False)
    rows = {r["name"]: r for r in report["operating_points"]}
    return {k: {m: rows[name][m] for m in ("score", "strict_score")} for k, name in points.items()}


def floors() -> dict[str, dict[str, float]]:
    return {point: {m: v - FLOOR_MARGIN for m, v in rules.items()} for point, rules in MEASURED.items()}


def below_floor(scores: dict[str, dict[str, float]]) -> list[str]:
    return [
        f"{point} {m}: {scores[point][m]:.3f} < floor {floor:.3f}"
        for point, rules in floors().items()
        for m, floor in rules.items()
        if scores[point][m] < floor
    ]


def test_the_floors_were_measured_on_the_embedded_checkpoint():
    """Installing another checkpoint without re-measuring MEASURED (and the figures in RESULTS) fails here."""
    assert load_checkpoint(demo_checkpoint_path()).sha256.startswith(MEASURED_ON)


def test_the_floors_can_fail():
    """Every floor is above zero (what noise and blank images score): otherwise the guard could not fail."""
    assert all(floor > 0.05 for rules in floors().values() for floor in rules.values()), floors()


@pytest.mark.slow
def test_the_embedded_checkpoint_clears_the_quality_floor():
    scores = guard_scores(demo_checkpoint_path())
    assert below_floor(scores) == [], scores


@pytest.mark.slow
def test_random_weights_of_the_same_config_fail_the_quality_guard(tmp_path):
    """Mutation: the weights `scripts/make_demo_checkpoint.py --random` writes fail every floor."""
    path = tmp_path / "random-demo.safetensors"
    write_random_demo(path)
    random_cfg, demo_cfg = load_checkpoint(path).cfg, load_checkpoint(demo_checkpoint_path()).cfg
    # the same architecture; only the latent normalisation, which training measures, differs
    vae = demo_cfg.vae
    same_norm = replace(random_cfg.vae, scaling_factor=vae.scaling_factor, shift_factor=vae.shift_factor)
    assert replace(random_cfg, vae=same_norm) == demo_cfg
    scores = guard_scores(path)
    assert len(below_floor(scores)) == 4, scores


def test_each_decoder_is_fed_its_own_latent_and_decodes_the_full_image():
    """The T-DVAE downsamples by 4, SD3's VAE and TAESD3 by 8: each is counted on the latent that decodes to the
    image size compared (a latent of side // 8 made the T-DVAE's figure a 64 px image's)."""
    decoders = _load_benchmark("demo_decoders")
    models = load_checkpoint(demo_checkpoint_path()).models()
    side = models.cfg.resolution[0]
    out = decoders.decoder_gflops(models, side)
    assert out["output_px"] == {"tdvae": side, "sd3": side, "taesd3": side}
    assert out["downsample"] == {"tdvae": models.cfg.vae.downsample, "sd3": 8, "taesd3": 8}
    # the T-DVAE's figure is that of decoding what the sampler makes, a latent of the checkpoint's latent size
    latent = torch.zeros(1, models.cfg.vae.latent_channels, *models.cfg.latent_size())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        models.vae.decode(latent)
    assert out["tdvae_gflops"] == pytest.approx(counter.get_total_flops() / 1e9)
    assert 150 < 1 / out["vs_sd3"] < 200 and 8 < 1 / out["vs_taesd3"] < 12  # 1/177 and 1/10 at 128 px


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else demo_checkpoint_path()
    print(json.dumps({"sha256": load_checkpoint(source).sha256, **guard_scores(source)}, indent=2))
