"""Shared ratio projections: ratio r starts as ratio 1 resized, trains as resized + difference, and the checkpoint
stores the plain per-ratio tensors that the shared training parameterisation stands for."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from configs import tiny_config
from test_train import CFG, PLAN

from elasticdit.checkpoint import load_checkpoint
from elasticdit.demo.initialization import init_weights
from elasticdit.demo.plan import TrainPlan
from elasticdit.demo.shared_projections import (
    SharedPatchEmbed,
    SharedProjOut,
    check_shareable,
    effective_tensors,
    output_rows,
    zero_differences,
)
from elasticdit.demo.steps import training_net
from elasticdit.demo.trainer import Trainer, train
from elasticdit.model.elastic_dit import unpatchify
from elasticdit.model.pipeline import build_models
from elasticdit.operating_points import operating_points

SHARED = dataclasses.replace(PLAN, ratio_projections="shared")


@pytest.mark.parametrize("ratio", [2, 4])
def test_a_ratio_starts_as_ratio_one_resized(ratio):
    """Zero difference: a ratio-r token embeds as the mean of its base patches' embeddings, and decodes as ratio 1's
    output cell repeated in each of its r x r base patches."""
    cfg = tiny_config(ratios=(1, ratio))
    dit = build_models(cfg).transformer
    zero_differences(dit)
    base_embed, base_out = dit.pos_embed.projection(1), dit.proj_out_for(1)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in (*base_embed.parameters(), *base_out.parameters()):
            p.normal_()
    p, c = cfg.transformer.patch_size, cfg.transformer.in_channels
    latent = torch.randn(2, c, 8 * ratio, 8 * ratio)
    embed = SharedPatchEmbed(base_embed, dit.pos_embed.projection(ratio), ratio)
    torch.testing.assert_close(embed(latent), F.avg_pool2d(base_embed(latent), ratio), atol=1e-5, rtol=1e-5)

    grid = (3, 2)
    h = torch.randn(2, grid[0] * grid[1], cfg.transformer.hidden_size)
    out = SharedProjOut(base_out, dit.proj_out_for(ratio), output_rows(p, c, ratio))
    cells = base_out(h).reshape(2, *grid, p, p, c).repeat(1, 1, 1, ratio, ratio, 1)
    expected = unpatchify(cells.reshape(2, grid[0] * grid[1], -1), grid, p * ratio, c)
    torch.testing.assert_close(unpatchify(out(h), grid, p * ratio, c), expected)


def test_shared_nets_equal_plain_nets_on_the_effective_tensors():
    models = build_models(CFG)
    init_weights(models, 0)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in models.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))  # non-zero differences, trained-looking projections
    t = CFG.transformer
    latent = torch.randn(2, t.in_channels, *CFG.latent_size())
    args = (latent, torch.tensor([0.3, 0.8]), torch.randn(2, t.text_len, t.text_dim), torch.randn(2, t.pooled_dim))
    points = [q for q in operating_points(CFG) if q.ratio != 1]
    shared = {q.name: training_net(models, q, shared=True)(*args) for q in points}
    state = models.transformer.state_dict() | effective_tensors(models.transformer)
    models.transformer.load_state_dict(state)
    for q in points:
        torch.testing.assert_close(training_net(models, q)(*args), shared[q.name])


def test_checkpoint_stores_what_the_shared_run_trained(tmp_path):
    trainer = Trainer(tmp_path / "run", CFG, SHARED, seed=2, log=lambda s: None)
    path = trainer.run()
    trainer.ema.swap()  # the checkpoint holds the EMA weights
    dit = trainer.models.transformer
    loaded = load_checkpoint(path).models().transformer
    t = CFG.transformer
    for q in operating_points(CFG):
        latent = torch.randn(1, t.in_channels, *CFG.latent_size())
        args = (latent, torch.tensor([0.5]), torch.randn(1, t.text_len, t.text_dim), torch.randn(1, t.pooled_dim))
        with torch.no_grad():
            reference = training_net(trainer.models, q, shared=True)(*args)
            torch.testing.assert_close(loaded.operating_point(q)(*args), reference, atol=1e-5, rtol=1e-4)
    for r in CFG.elastic.compression_ratios[1:]:
        assert dit.proj_out_for(r).weight.abs().sum() > 0  # each ratio trained its own difference


def test_resume_refuses_other_ratio_projections(tmp_path):
    plan = dataclasses.replace(SHARED, vae_steps=4, dit_steps=0)
    train(tmp_path / "s", CFG, plan, seed=1, log=lambda s: None)
    with pytest.raises(ValueError, match="trained with ratio_projections 'shared'; not resuming"):
        train(tmp_path / "s", CFG, dataclasses.replace(plan, ratio_projections="separate"), seed=1, resume=True)


def test_plan_and_config_refusals():
    with pytest.raises(ValueError, match="unknown ratio projections 'tied'"):
        TrainPlan(ratio_projections="tied")
    with pytest.raises(ValueError, match="need compression ratio 1"):
        check_shareable(build_models(tiny_config(ratios=(2, 4))).transformer)
