"""Attention cores: `forward(q, k, v)` on [B*H, S, D] tensors of the joint sequence [image (raster), text].

`DenseAttention` is full attention; `MaskedAttention` is the SSBA reference (dense scores plus the boolean mask
of the rules in docs/design.md, "SSBA semantics"). Both are written as 3-D batched matmuls + softmax, the
formulation XNNPACK delegates.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .pattern import SSBAPattern


@functools.lru_cache(maxsize=16)
def mask_bias(pattern: SSBAPattern) -> torch.Tensor:
    """0 where the joint mask allows a pair, -inf elsewhere; shared by every layer with this pattern."""
    allowed = torch.from_numpy(pattern.joint_mask())
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


class DenseAttention(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.scale = head_dim**-0.5

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.bmm(q * self.scale, k.transpose(1, 2))
        return torch.bmm(scores.softmax(dim=-1), v)


class MaskedAttention(nn.Module):
    """The reference every lowering must equal: dense attention with the SSBA mask."""

    def __init__(self, head_dim: int, pattern: SSBAPattern):
        super().__init__()
        self.scale = head_dim**-0.5
        self.pattern = pattern
        self.register_buffer("bias", mask_bias(pattern), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scores = torch.bmm(q * self.scale, k.transpose(1, 2)) + self.bias
        return torch.bmm(scores.softmax(dim=-1), v)
