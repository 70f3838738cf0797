"""Timestep, pooled-text and position embeddings, and the per-ratio patch embedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_frequencies(dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).reshape(1, half)


def timestep_embedding(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """diffusers `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)`: [cos, sin]."""
    args = t.reshape(-1, 1) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedder(nn.Module):
    """`linear_1` -> SiLU -> `linear_2` (diffusers' TimestepEmbedding and PixArtAlphaTextProjection)."""

    def __init__(self, dim_in: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class CombinedTimestepTextProjEmbeddings(nn.Module):
    """The conditioning vector: embedded timestep plus projected pooled text."""

    def __init__(self, dim: int, pooled_dim: int):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(256, dim)
        self.text_embedder = MLPEmbedder(pooled_dim, dim)
        self.register_buffer("freqs", timestep_frequencies(256), persistent=False)

    def forward(self, sigma: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        # Inputs carry sigma in [0, 1]; the embedding sees sigma * 1000 as SD3's does.
        t_emb = self.timestep_embedder(timestep_embedding(sigma * 1000.0, self.freqs))
        return t_emb + self.text_embedder(pooled)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.to(torch.float64).reshape(-1)[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int], ratio: int = 1) -> torch.Tensor:
    """[gh*gw, dim] codes of token centres in base-patch units (x first, then y, as diffusers orders them).

    A token at ratio r covers r x r base patches; its centre is r*i + (r-1)/2, so a place in the image gets
    the same code at every ratio.
    """
    gh, gw = grid
    ys = torch.arange(gh, dtype=torch.float64) * ratio + (ratio - 1) / 2
    xs = torch.arange(gw, dtype=torch.float64) * ratio + (ratio - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, xx), sincos_1d(dim // 2, yy)], dim=1).float()


def ratio_suffix(ratio: int) -> str:
    """Ratio 1 keeps diffusers' tensor names; other ratios get their own `_r{r}` projections."""
    return "" if ratio == 1 else f"_r{ratio}"


class PatchEmbed(nn.Module):
    """One strided conv per compression ratio (`proj`, `proj_r2`, ...), plus SD3's stored table if cropped."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, ratios: tuple[int, ...], max_size: int = 0):
        super().__init__()
        self.patch_size = patch_size
        self.ratios = tuple(ratios)
        for r in self.ratios:
            cell = patch_size * r
            self.add_module(f"proj{ratio_suffix(r)}", nn.Conv2d(in_channels, dim, cell, stride=cell))
        self.max_size = max_size
        if max_size:
            self.register_buffer("pos_embed", torch.zeros(1, max_size * max_size, dim))

    def projection(self, ratio: int) -> nn.Conv2d:
        return getattr(self, f"proj{ratio_suffix(ratio)}")

    def position_codes(self, grid: tuple[int, int], ratio: int) -> torch.Tensor:
        """[1, gh*gw, dim] for the grid; a constant once the operating point is fixed."""
        if not self.max_size:
            dim = self.projection(ratio).out_channels
            return sincos_2d(dim, grid, ratio)[None]
        gh, gw = grid
        top, left = (self.max_size - gh) // 2, (self.max_size - gw) // 2
        table = self.pos_embed.reshape(1, self.max_size, self.max_size, -1)
        return table[:, top : top + gh, left : left + gw, :].reshape(1, gh * gw, -1)
