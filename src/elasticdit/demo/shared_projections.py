"""Training-time sharing of the per-ratio projections: ratio r's patch embedding and output projection are ratio 1's,
resized to r x r base patches, plus a learned difference.

A checkpoint stores one patch embedding and one output projection per compression ratio (docs/design.md,
"Checkpoint format v1"). The sandwich rule trains ratio 1 and the lightest ratio every step, but a ratio that
neither has trains only when the random pick lands on it. Shared, every step's ratio-1 gradient also moves the
other ratios' projections (as FlexiViT resizes one patch embedding to every patch size): ratio r embeds a token
as the mean of ratio 1's embeddings of its r x r base patches, and decodes it by repeating ratio 1's output in
each of them, each plus its own difference. During training the model's ratio-r tensors hold that difference
(zero at the start); `effective_tensors` turns them into the plain per-ratio tensors a checkpoint stores, so
nothing downstream (format, export, bundles) knows about the sharing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.elastic_dit import OUTPUT_PROJECTION, ElasticDiT
from ..model.embeddings import ratio_suffix

BASE_RATIO = 1


def resized_patch_weight(base: torch.Tensor, ratio: int) -> torch.Tensor:
    """[D, C, p, p] -> [D, C, p*r, p*r]: the embedding of a ratio-r patch is the mean of its base patches'."""
    return base.repeat(1, 1, ratio, ratio) / (ratio * ratio)


def output_rows(patch: int, channels: int, ratio: int) -> torch.Tensor:
    """Row of ratio 1's output projection that each row of ratio r's repeats: cell (i, j, c) of a ratio-r token
    (unpatchify's order) takes base cell (i mod p, j mod p, c)."""
    cell = patch * ratio
    i = torch.arange(cell).reshape(cell, 1, 1) % patch
    j = torch.arange(cell).reshape(1, cell, 1) % patch
    c = torch.arange(channels).reshape(1, 1, channels)
    return ((i * patch + j) * channels + c).reshape(-1)


class SharedPatchEmbed(nn.Module):
    def __init__(self, base: nn.Conv2d, delta: nn.Conv2d, ratio: int):
        super().__init__()
        self.base, self.delta, self.ratio = base, delta, ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = resized_patch_weight(self.base.weight, self.ratio) + self.delta.weight
        return F.conv2d(x, weight, self.base.bias + self.delta.bias, stride=self.delta.stride)


class SharedProjOut(nn.Module):
    def __init__(self, base: nn.Linear, delta: nn.Linear, rows: torch.Tensor):
        super().__init__()
        self.base, self.delta = base, delta
        self.register_buffer("rows", rows, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base.weight[self.rows] + self.delta.weight
        return F.linear(x, weight, self.base.bias[self.rows] + self.delta.bias)


def check_shareable(dit: ElasticDiT) -> None:
    if BASE_RATIO not in dit.cfg.elastic.compression_ratios:
        raise ValueError("shared ratio projections need compression ratio 1 among the config's ratios")


def share_projections(net: nn.Module, dit: ElasticDiT) -> None:
    """Swap a ratio-r `StaticElasticDiT`'s projections for the shared ones (ratio 1's own are left as they are)."""
    r = net.point.ratio
    if r == BASE_RATIO:
        return
    t = dit.cfg.transformer
    net.patch_embed = SharedPatchEmbed(dit.pos_embed.projection(BASE_RATIO), dit.pos_embed.projection(r), r)
    net.proj_out = SharedProjOut(
        dit.proj_out_for(BASE_RATIO), dit.proj_out_for(r), output_rows(t.patch_size, t.in_channels, r)
    )


@torch.no_grad()
def zero_differences(dit: ElasticDiT) -> None:
    """Start every other ratio exactly at ratio 1's projections."""
    for r in dit.cfg.elastic.compression_ratios:
        if r != BASE_RATIO:
            for module in (dit.pos_embed.projection(r), dit.proj_out_for(r)):
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)


@torch.no_grad()
def effective_tensors(dit: ElasticDiT) -> dict[str, torch.Tensor]:
    """The per-ratio tensors (names as in `dit.state_dict()`) that the shared training parameterisation stands for."""
    t = dit.cfg.transformer
    embed, out = dit.pos_embed.projection(BASE_RATIO), dit.proj_out_for(BASE_RATIO)
    tensors = {}
    for r in dit.cfg.elastic.compression_ratios:
        if r == BASE_RATIO:
            continue
        conv, linear = dit.pos_embed.projection(r), dit.proj_out_for(r)
        rows = output_rows(t.patch_size, t.in_channels, r)
        name, head = f"pos_embed.proj{ratio_suffix(r)}", f"{OUTPUT_PROJECTION}{ratio_suffix(r)}"
        tensors[f"{name}.weight"] = resized_patch_weight(embed.weight, r) + conv.weight
        tensors[f"{name}.bias"] = embed.bias + conv.bias
        tensors[f"{head}.weight"] = out.weight[rows] + linear.weight
        tensors[f"{head}.bias"] = out.bias[rows] + linear.bias
    return tensors
