"""Core ML fp16 compute and large activations: the iOS formulation's norms (row-scaled, `layers.fp16_safe_norms`)
stay accurate where a plain LayerNorm's square passes float16's 65504, and `verify` holds fp16 recipes to an SNR
floor against float32, so such an overflow fails it (the same-numerics reference overflows alike)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from configs import tiny_config
from typer.testing import CliRunner

from elasticdit.checkpoint import load_checkpoint, save_checkpoint
from elasticdit.cli import app
from elasticdit.lowering import export_program
from elasticdit.model.layers import LayerNorm, RMSNorm
from elasticdit.model.pipeline import random_weights
from elasticdit.operating_points import select
from elasticdit.slicing import denoise_unit
from elasticdit.targets import TARGETS
from elasticdit.targets.ios import convert
from elasticdit.targets.ios.runner import run_graph
from elasticdit.verify import DEFAULT_FLOAT16_MIN_SNR_DB, NOISE_LEVELS, PROMPT, snr_db

FLOOR = DEFAULT_FLOAT16_MIN_SNR_DB  # 40 dB; ios-fp16.toml states it as float16_min_snr_db
STREAM_SCALE = 1000.0  # image and text streams of ~1e2-1e3, as the trained demo's blocks.3 (~2000)
QK_SCALE = 1000.0  # q/k projections past 255 before their RMSNorm
QK = (".attn.to_q.", ".attn.to_k.", ".attn.add_q_proj.", ".attn.add_k_proj.")
SAFE = TARGETS["ios"].formulation
PLAIN = dataclasses.replace(SAFE, norms="plain")  # the mutation: the formulation before the fix


@pytest.fixture(scope="module")
def large_ckpt(tmp_path_factory):
    """The tiny model (text encoder, T-DVAE) with the patch and text embeddings and the q/k projections scaled."""
    cfg = tiny_config(text_encoder=True)
    weights = random_weights(cfg, 0)
    for key in weights:
        if key.startswith(("transformer.pos_embed.proj", "transformer.context_embedder.")):
            weights[key] = weights[key] * STREAM_SCALE
        elif any(part in key for part in QK):
            weights[key] = weights[key] * QK_SCALE
    path = tmp_path_factory.mktemp("large") / "large.safetensors"
    save_checkpoint(path, cfg, weights)
    return path


def _unit_and_levels(ckpt):
    models = load_checkpoint(ckpt).models()
    (point,) = select(models.cfg, ["r2_d2"])
    unit = denoise_unit(models, point, (128, 128), "masked")
    latent, timestep = unit.example_inputs[:2]
    with torch.no_grad():
        text, pooled = models.encode_prompt(PROMPT)
    g = torch.Generator().manual_seed(8)
    clean, noise = torch.randn(latent.shape, generator=g), torch.randn(latent.shape, generator=g)
    levels = [[(1 - s) * clean + s * noise, torch.full_like(timestep, s), text, pooled] for s in NOISE_LEVELS]
    return unit, levels


def _norm_inputs(module, inputs) -> tuple[dict[type, float], int]:
    """The largest |input| each kind of norm sees in a float32 forward, and how many norm calls it makes."""
    seen: dict[type, float] = {LayerNorm: 0.0, RMSNorm: 0.0}
    calls = []

    def record(mod, args):
        seen[type(mod)] = max(seen[type(mod)], float(args[0].abs().max()))
        calls.append(mod)

    hooks = [m.register_forward_pre_hook(record) for m in module.modules() if type(m) in seen]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen, len(calls)


def test_row_scaled_norms_survive_fp16_compute_where_plain_ones_overflow(large_ckpt):
    unit, levels = _unit_and_levels(large_ckpt)
    seen, _ = _norm_inputs(unit.module, levels[0])
    assert seen[LayerNorm] > 300 and seen[RMSNorm] > 300  # the premise: plain squares pass 65504 (> 256^2)
    safe, plain = export_program(unit, SAFE), export_program(unit, PLAIN)
    snr = {"safe": [], "plain": []}
    for inputs in levels:
        with torch.no_grad():
            ref = unit.module(*inputs)
        # the row-scaled program is the same function in float32
        (exact,) = run_graph(safe, {}, inputs, half=False)
        assert float((exact - ref).norm() / ref.norm()) < 1e-5
        snr["safe"].append(snr_db(run_graph(safe, {}, inputs, half=True)[0], ref))
        snr["plain"].append(snr_db(run_graph(plain, {}, inputs, half=True)[0], ref))
    assert min(snr["safe"]) >= FLOOR, snr
    assert not min(snr["plain"]) >= FLOOR, snr  # the mutation: the formulation before the fix fails the floor


def test_row_scaled_norms_convert_to_fp16_core_ml_ops(large_ckpt):
    """ct.convert (Linux: conversion only) of the row-scaled program: no layer_norm fusion (Core ML runs the ops
    the emulation runs), a reduce_max of abs per norm, and no fp32 op besides the timestep island."""
    unit, levels = _unit_and_levels(large_ckpt)
    _, calls = _norm_inputs(unit.module, levels[0])

    def histogram(formulation):
        program = convert.convert(unit, export_program(unit, formulation), "fp16")._mil_program
        ops = list(program.functions["main"].operations)
        fp32 = [op.op_type for op in ops if op.op_type not in ("const", "cast") and _is_fp32(op)]
        return {t: sum(op.op_type == t for op in ops) for t in {op.op_type for op in ops}}, fp32

    safe, safe_fp32 = histogram(SAFE)
    plain, plain_fp32 = histogram(PLAIN)
    assert "layer_norm" not in safe and "layer_norm" not in plain
    assert "inverse" not in safe  # MIL inverse is 1 / (x + 1e-4), which the emulation would not see
    assert safe["abs"] == calls and safe["reduce_max"] - plain.get("reduce_max", 0) == calls  # one per norm call
    assert safe["reduce_mean"] == plain["reduce_mean"]
    assert sorted(safe_fp32) == sorted(plain_fp32) and {"sin", "cos"} <= set(safe_fp32)


def _is_fp32(op) -> bool:
    from coremltools.converters.mil.mil import types

    return any(getattr(out, "dtype", None) == types.fp32 for out in op.outputs)


runner = CliRunner()


def _export_and_verify(ckpt, out) -> dict:
    cmd = ["export", str(ckpt), "--target", "ios", "--ops", "r2_d2", "-o", str(out), "--json"]
    result = runner.invoke(app, cmd)
    assert result.exit_code == 0, result.output + result.stderr
    result = runner.invoke(app, ["verify", str(out), "--checkpoint", str(ckpt), "--json"])
    assert result.exit_code in (0, 1), result.output + result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_verify_holds_fp16_recipes_to_an_snr_floor(large_ckpt, tmp_path, monkeypatch):
    report = _export_and_verify(large_ckpt, tmp_path / "safe")
    assert report["recipe"] == "ios-fp16" and report["passed"], report
    for check in report["methods"]:  # every method computes in fp16: every one is held to the floor
        assert check["min_snr_db"] == FLOOR <= check["snr_db"] and check["value"] <= check["limit"]
    # the mutation: export (and verify's rebuilt graphs) with the plain norms, as before the fix
    monkeypatch.setattr(TARGETS["ios"], "formulation", PLAIN)
    report = _export_and_verify(large_ckpt, tmp_path / "plain")
    (denoise,) = [c for c in report["methods"] if c["kind"] == "denoise"]
    assert not report["passed"] and not denoise["passed"]
    # the same-numerics reference overflows alike: only the floor against float32 catches it
    assert denoise["value"] <= denoise["limit"] and denoise["snr_db"] < FLOOR


def test_snr_floors_by_method_kind_and_precision():
    from elasticdit.specs import MethodKind
    from elasticdit.targets import target_recipe
    from elasticdit.verify import limits

    fp16, int8 = target_recipe("ios-fp16", "ios"), target_recipe("ios-int8", "ios")
    assert fp16.float16_min_snr_db == FLOOR and int8.float16_min_snr_db is None  # the default applies: 40 dB
    assert limits(fp16, MethodKind.DENOISE) == limits(fp16, MethodKind.DECODE) == (2e-3, FLOOR)
    assert limits(int8, MethodKind.DENOISE) == (2e-3, 35.0) and limits(int8, MethodKind.ENCODE_TEXT)[1] == FLOOR
    assert limits(target_recipe("ios-fp32", "ios"), MethodKind.DENOISE)[1] is None
    assert limits(target_recipe("android-fp32", "android"), MethodKind.DENOISE)[1] is None
    looser = dataclasses.replace(fp16, float16_min_snr_db=10.0)
    assert limits(looser, MethodKind.DECODE)[1] == 10.0  # the key is read (verify takes the tool's own recipe)


def test_an_output_with_inf_or_nan_is_the_worst_level():
    from elasticdit.verify import rel_err

    ref = torch.ones(4)
    for bad in (float("nan"), float("inf")):
        out = torch.tensor([1.0, 1.0, bad, 1.0])
        assert snr_db(out, ref) == -float("inf") and rel_err(out, ref) == float("inf")
        assert min([snr_db(ref, ref), snr_db(out, ref)]) == -float("inf")  # a NaN here would be skipped by min
    assert snr_db(ref, ref) == float("inf") and rel_err(ref, ref) == 0.0
