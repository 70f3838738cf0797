"""SD3 import: our reference forward equals diffusers' SD3Transformer2DModel on converted weights."""

import json

import pytest
import torch
from typer.testing import CliRunner

from elasticdit.checkpoint import load_checkpoint
from elasticdit.cli import app
from elasticdit.errors import DepthPlanError, UnsupportedModelError
from elasticdit.operating_points import operating_points

diffusers = pytest.importorskip("diffusers")
runner = CliRunner()


def tiny_sd3(tmp_path, qk_norm, **extra):
    torch.manual_seed(0)
    model = diffusers.SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=24,
        caption_projection_dim=32,
        pooled_projection_dim=12,
        out_channels=16,
        pos_embed_max_size=24,
        qk_norm=qk_norm,
        **extra,
    ).eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-Zero starts at zero: give every path signal
            p.copy_(torch.randn_like(p) * 0.2)
    src = tmp_path / "sd3"
    model.save_pretrained(src)
    return model, src


@pytest.mark.parametrize(
    ("qk_norm", "dual"), [("rms_norm", ()), (None, ()), ("rms_norm", (0, 1))], ids=["sd3-qk", "sd3", "sd35-mmditx"]
)
def test_converted_forward_matches_diffusers(tmp_path, qk_norm, dual):
    """SD3, and SD3.5's MMDiT-X (blocks 0 and 1 with a second image self-attention, qk RMSNorm)."""
    model, src = tiny_sd3(tmp_path, qk_norm, dual_attention_layers=dual)
    out = tmp_path / "sd3.safetensors"
    result = runner.invoke(
        app, ["convert", "--from", "diffusers-sd3", str(src), "-o", str(out), "--depths", "2=0,2", "--text-len", "7"]
    )
    assert result.exit_code == 0, result.output
    ck = load_checkpoint(out, resolution=(128, 160))
    assert ck.cfg.elastic.compression_ratios == (1,) and not ck.cfg.ssba.enabled and ck.cfg.vae is None
    assert ck.cfg.elastic.depths == {"3": (0, 1, 2), "2": (0, 2)}
    assert ck.cfg.transformer.dual_attention_layers == dual
    ours = ck.models().transformer
    full = operating_points(ck.cfg)[0]
    g = torch.Generator().manual_seed(1)
    latent, text, pooled = (
        torch.randn(2, 16, 16, 20, generator=g),
        torch.randn(2, 7, 24, generator=g),
        torch.randn(2, 12, generator=g),
    )
    sigma = torch.tensor([0.25, 0.8])
    with torch.no_grad():
        ref = model(latent, text, pooled, sigma * 1000).sample
        got = ours(latent, sigma, text, pooled, full, attention="dense")
    assert ((got - ref).norm() / ref.norm()).item() <= 1e-5


def test_unknown_transformer_option_is_refused(tmp_path):
    _, src = tiny_sd3(tmp_path, "rms_norm")
    raw = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**raw, "some_future_option": 1}))
    result = runner.invoke(app, ["convert", str(src), "-o", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 1
    assert "some_future_option" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_depth_spec_and_config(tmp_path):
    from elasticdit.convert_sd3 import sd3_config

    with pytest.raises(DepthPlanError, match="NAME="):
        sd3_config({"num_layers": 3}, ["0,1"], 7)
    with pytest.raises(DepthPlanError, match="block 5"):
        sd3_config({"num_layers": 3}, ["x=0,5"], 7)
    with pytest.raises(UnsupportedModelError, match="qk_norm"):
        sd3_config({"qk_norm": "layer_norm"}, [], 7)
    cfg = sd3_config(
        json.loads(
            '{"num_layers": 4, "num_attention_heads": 2, "attention_head_dim": 8, "caption_projection_dim": 16}'
        ),
        ["2=0-1"],
        7,
    )
    assert cfg.elastic.depths["2"] == (0, 1)


@pytest.mark.parametrize("shift", [1.0, 3.0, 2.5])
@pytest.mark.parametrize("steps", [1, 2, 4, 28])
def test_flow_match_sigmas_equal_diffusers(shift, steps):
    from elasticdit.model.sampler import flow_match_sigmas, schedule_sigmas, shifted_sigmas

    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    assert torch.equal(flow_match_sigmas(steps, shift), scheduler.sigmas)
    assert torch.equal(schedule_sigmas("flow_match_euler", steps, shift), scheduler.sigmas)
    # the older rectified-flow schedule ends at 0 one step early: not diffusers' (the test can fail)
    assert steps == 1 or not torch.equal(shifted_sigmas(steps, shift), scheduler.sigmas)


def test_half_precision_weights_keep_their_dtype(tmp_path):
    model, _ = tiny_sd3(tmp_path, "rms_norm")
    model.half().save_pretrained(tmp_path / "fp16")
    out = tmp_path / "fp16.safetensors"
    result = runner.invoke(app, ["convert", str(tmp_path / "fp16"), "-o", str(out), "--text-len", "7"])
    assert result.exit_code == 0, result.output
    ck = load_checkpoint(out)
    assert {t.dtype for t in ck.tensors.values()} == {torch.float16}
    assert out.stat().st_size < 0.6 * sum(t.numel() * 4 for t in ck.tensors.values())
