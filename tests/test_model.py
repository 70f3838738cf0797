"""The PyTorch reference: elastic depth and ratio, position codes, T-DVAE, text encoder, sampler."""

import dataclasses

import pytest
import torch
from configs import tiny_config

from elasticdit.model.elastic_dit import SIGMA_FLOOR
from elasticdit.model.embeddings import sincos_1d, sincos_2d
from elasticdit.model.pipeline import build_models, random_weights
from elasticdit.model.sampler import sample, shifted_sigmas, training_pair
from elasticdit.model.tdvae import TDVAE, haar_dwt, haar_idwt
from elasticdit.model.text_encoder import PAD, tokenize
from elasticdit.operating_points import operating_points

CFG = tiny_config(text_encoder=True)


@pytest.fixture(scope="module")
def models():
    m = build_models(CFG)
    m.load_state_dict(random_weights(CFG, 1))
    return m.eval()


def inputs(cfg, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = cfg.transformer
    lh, lw = cfg.latent_size()
    return (
        torch.randn(batch, 16, lh, lw, generator=g),
        torch.rand(batch, generator=g),
        torch.randn(batch, t.text_len, t.text_dim, generator=g),
        torch.randn(batch, t.pooled_dim, generator=g),
    )


def test_elastic_depth_runs_exactly_the_listed_blocks(models):
    calls = []
    hooks = [
        b.register_forward_pre_hook(lambda mod, args, i=i: calls.append(i))
        for i, b in enumerate(models.transformer.transformer_blocks)
    ]
    try:
        for point in operating_points(CFG):
            calls.clear()
            with torch.no_grad():
                models.transformer(*inputs(CFG), point)
            assert tuple(calls) == point.blocks
    finally:
        for h in hooks:
            h.remove()


def test_operating_points_differ_and_are_deterministic(models):
    outs = {}
    with torch.no_grad():
        for point in operating_points(CFG):
            a = models.transformer(*inputs(CFG), point)
            assert a.shape == (1, 16, 16, 16)
            assert torch.equal(a, models.transformer(*inputs(CFG), point))
            outs[point.name] = a
    names = list(outs)
    assert all(not torch.allclose(outs[x], outs[y]) for x in names for y in names if x < y)


def test_ratio_uses_its_own_projections(models):
    r1, r2 = [p for p in operating_points(CFG) if p.depth == "4"]
    net = models.transformer.operating_point(r2)
    assert net.patch_embed is models.transformer.pos_embed.proj_r2
    assert net.proj_out is models.transformer.proj_out_r2
    assert net.patch_embed.kernel_size == (4, 4) and net.grid == (4, 4)
    assert models.transformer.operating_point(r1).blocks[0] is net.blocks[0]  # blocks are shared


def test_sample_prediction_returns_the_velocity_of_the_predicted_sample(models):
    """prediction="sample": the same weights' raw output is x0, and the network returns (x_sigma - x0) / sigma."""
    cfg = dataclasses.replace(CFG, transformer=dataclasses.replace(CFG.transformer, prediction="sample"))
    sampled = build_models(cfg)
    sampled.load_state_dict(models.state_dict())
    latent, _, text, pooled = inputs(CFG, batch=3)
    sigma = torch.tensor([0.9, 0.3, 0.01])  # the last one is below the floor
    for point in operating_points(CFG):
        with torch.no_grad():
            x0 = models.transformer(latent, sigma, text, pooled, point)
            v = sampled.transformer(latent, sigma, text, pooled, point)
        floor = sigma.clamp(min=SIGMA_FLOOR).view(-1, 1, 1, 1)
        torch.testing.assert_close(v, (latent - x0) / floor)


def test_position_codes_name_the_same_place_at_every_ratio():
    dim = 32
    fine = sincos_2d(dim, (8, 8), 1)
    coarse = sincos_2d(dim, (4, 4), 2)
    # the ratio-2 token (i, j) sits at base-patch position (2i + 0.5, 2j + 0.5)
    i, j = 1, 2
    pos = torch.tensor([2 * j + 0.5]), torch.tensor([2 * i + 0.5])
    expected = torch.cat([sincos_1d(dim // 2, pos[0]), sincos_1d(dim // 2, pos[1])], dim=1).float()[0]
    torch.testing.assert_close(coarse[i * 4 + j], expected)
    assert torch.equal(sincos_2d(dim, (8, 8), 1)[3 * 8 + 5], fine[3 * 8 + 5])
    # the ratio-1 code of token (y=3, x=5) is the sin-cos of (5, 3)
    torch.testing.assert_close(
        fine[3 * 8 + 5],
        torch.cat([sincos_1d(16, torch.tensor([5.0])), sincos_1d(16, torch.tensor([3.0]))], 1).float()[0],
    )


def test_haar_transform_is_orthonormal_and_invertible():
    x = torch.randn(2, 3, 8, 12)
    bands = haar_dwt(x)
    assert bands.shape == (2, 12, 4, 6)
    torch.testing.assert_close(haar_idwt(bands), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(bands.pow(2).sum(), x.pow(2).sum(), rtol=1e-5, atol=0)  # energy kept
    flat = torch.ones(1, 1, 4, 4)
    b = haar_dwt(flat)
    assert torch.allclose(b[:, 0], torch.full((1, 2, 2), 2.0)) and b[:, 1:].abs().max() == 0  # LL only


def test_tdvae_shapes_and_range():
    vae = TDVAE(CFG.vae).eval()
    with torch.no_grad():
        img = vae.decode(torch.randn(1, 16, 16, 16) * 3)
        assert img.shape == (1, 3, 128, 128) and img.min() >= 0 and img.max() <= 1
        assert vae.encode(img).shape == (1, 16, 16, 16)
    z = torch.randn(4)
    torch.testing.assert_close(vae.unscale(vae.scale(z)), z)


def test_text_encoder_ignores_padding(models):
    vocab = CFG.text_encoder.vocab
    ids = tokenize("two red circles", vocab, 5)
    assert ids[0] == 1 and ids[-1] == PAD and ids[1] == vocab.index("two")
    assert tokenize("a zebra", vocab, 5)[2] == 2  # unknown word
    enc = models.text_encoder
    tokens = torch.tensor([ids])
    with torch.no_grad():
        text, pooled = enc(tokens)
        altered = tokens.clone()
        altered[0, -1] = vocab.index("blue")  # a pad becomes a word: pooled must change
        _, pooled2 = enc(altered)
    assert text.shape == (1, 5, 24) and pooled.shape == (1, 12)
    assert not torch.allclose(pooled, pooled2)
    with torch.no_grad():
        _, empty = enc(torch.tensor([tokenize("", vocab, 5)]))
    assert torch.isfinite(empty).all()


def test_sigmas_follow_sd3_shift():
    s = shifted_sigmas(4, 3.0)
    assert s[0] == 1 and s[-1] == 0 and torch.all(s[:-1] > s[1:])
    torch.testing.assert_close(s[2], torch.tensor(3 * 0.5 / (1 + 2 * 0.5)))


def test_euler_with_the_true_velocity_recovers_the_sample():
    x0 = torch.randn(1, 16, 4, 4)
    noise = torch.randn(1, 16, 4, 4)
    x_half, v = training_pair(x0, noise, torch.tensor([0.5]))
    torch.testing.assert_close(x_half, 0.5 * x0 + 0.5 * noise)
    torch.testing.assert_close(v, noise - x0)

    def oracle(x, sigma, text, pooled):  # the straight-line velocity toward x0
        return (x - x0) / sigma.view(-1, 1, 1, 1)

    out = sample(oracle, noise, None, None, steps=7, shift=3.0)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)

    # started part-way: the latent at the schedule's 4th sigma, only the remaining 3 steps run
    calls = []
    x4, _ = training_pair(x0, noise, shifted_sigmas(7, 3.0)[4:5])
    out = sample(oracle, x4, None, None, steps=7, shift=3.0, start_step=4, on_step=lambda i, s: calls.append(i))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=1e-5)
    assert calls == [4, 5, 6]
    with pytest.raises(ValueError, match="start_step"):
        sample(oracle, noise, None, None, steps=7, shift=3.0, start_step=7)


def test_classifier_free_guidance_combines_both_passes():
    def fake(x, sigma, text, pooled):
        return text.view(-1, 1, 1, 1).expand_as(x)  # velocity = the "text" scalar

    noise = torch.zeros(1, 1, 2, 2)
    cond, uncond = torch.tensor([[2.0]]), torch.tensor([[1.0]])
    for batched in (True, False):
        out = sample(
            fake,
            noise,
            cond,
            cond,
            steps=3,
            shift=1.0,
            guidance=4.0,
            uncond_text=uncond,
            uncond_pooled=uncond,
            batched_cfg=batched,
        )
        # v = 1 + 4 * (2 - 1) = 5 integrated from sigma 1 to 0: x = 0 - 5
        torch.testing.assert_close(out, torch.full_like(noise, -5.0))
    with pytest.raises(ValueError, match="unconditional"):
        sample(fake, noise, cond, cond, steps=1, shift=1.0, guidance=2.0)


def test_dual_attention_blocks_run_attn2_with_the_image_only_ssba_pattern():
    """MMDiT-X blocks under SSBA: attn2's core is the block's pattern without text; lowerings equal masked."""
    t = dataclasses.replace(CFG.transformer, dual_attention_layers=(1, 3))
    cfg = dataclasses.replace(CFG, transformer=t)
    m = build_models(cfg)
    m.load_state_dict(random_weights(cfg, 2))
    m.eval()
    point = operating_points(cfg)[0]
    net = m.transformer.operating_point(point, attention="masked")
    assert [type(c).__name__ for c in net.image_cores] == ["Identity", "MaskedAttention", "Identity", "MaskedAttention"]
    assert net.image_cores[1].pattern.text_len == 0 and net.cores[1].pattern.text_len == t.text_len
    x = inputs(cfg)
    with torch.no_grad():
        ref = net(*x)
        for kind in ("tiles", "slices"):
            got = m.transformer.operating_point(point, attention=kind)(*x)
            assert ((got - ref).norm() / ref.norm()).item() <= 1e-5
        m.transformer.transformer_blocks[1].attn2.to_out[0].weight.zero_()
        m.transformer.transformer_blocks[1].attn2.to_out[0].bias.zero_()
        assert not torch.allclose(net(*x), ref, atol=1e-4)  # attn2 contributes
    d2 = next(p for p in operating_points(cfg) if p.depth == "2" and p.ratio == 1)  # blocks (0, 3)
    assert [type(c).__name__ for c in m.transformer.image_attention_cores(d2)] == ["Identity", "MaskedAttention"]
    only_one = dataclasses.replace(cfg, transformer=dataclasses.replace(t, dual_attention_layers=(1,)))
    assert build_models(only_one, "meta").transformer.image_attention_cores(d2) is None
