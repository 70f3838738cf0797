"""transformers' `T5EncoderModel` (T5 v1.1: gated GELU; or ReLU), with its tensor names, XNNPACK-friendly.

No attention mask (the SD3 pipeline passes none: padding tokens are attended), no score scaling (T5's), the
relative position bias of block 0 shared by every block. The bucket of each (query, key) pair is a constant of the
sequence length, so the bias is one embedding lookup of a constant index table.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..sd3_config import T5EncoderConfig
from .layers import averaging_vector, gelu_tanh


def relative_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """[L, L] int64: transformers' `T5Attention._relative_position_bucket` (bidirectional), same ops."""
    position = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # key - query
    num_buckets //= 2
    buckets = (position > 0).to(torch.long) * num_buckets
    position = torch.abs(position)
    max_exact = num_buckets // 2
    is_small = position < max_exact
    large = max_exact + (
        torch.log(position.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, position, large)


class T5LayerNorm(nn.Module):
    """RMS norm without mean subtraction or bias; the mean of squares as a matmul."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("avg", averaging_vector(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(F.linear(x * x, self.avg) + self.eps))


class T5Attention(nn.Module):
    def __init__(self, cfg: T5EncoderConfig, has_bias: bool):
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.q, self.k, self.v = (nn.Linear(cfg.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, cfg.d_model, bias=False)
        if has_bias:
            self.relative_attention_bias = nn.Embedding(cfg.relative_attention_num_buckets, cfg.num_heads)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.d_kv).transpose(1, 2).reshape(b * self.heads, n, self.d_kv)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """bias [B*H, L, L]."""
        b, n, _ = x.shape
        scores = torch.bmm(self._split(self.q(x)), self._split(self.k(x)).transpose(1, 2)) + bias
        out = torch.bmm(scores.softmax(-1), self._split(self.v(x)))
        return self.o(out.reshape(b, self.heads, n, self.d_kv).transpose(1, 2).reshape(b, n, -1))


class T5LayerSelfAttention(nn.Module):
    def __init__(self, cfg: T5EncoderConfig, has_bias: bool):
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_bias)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseGatedActDense(nn.Module):
    def __init__(self, cfg: T5EncoderConfig):
        super().__init__()
        self.wi_0 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wi_1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(gelu_tanh(self.wi_0(x)) * self.wi_1(x))  # "gelu_new" is the tanh approximation


class T5DenseActDense(nn.Module):
    def __init__(self, cfg: T5EncoderConfig):
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.relu(self.wi(x)))


class T5LayerFF(nn.Module):
    def __init__(self, cfg: T5EncoderConfig):
        super().__init__()
        gated = cfg.feed_forward_proj == "gated-gelu"
        self.DenseReluDense = T5DenseGatedActDense(cfg) if gated else T5DenseActDense(cfg)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, cfg: T5EncoderConfig, has_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(cfg, has_bias), T5LayerFF(cfg)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.layer[1](self.layer[0](x, bias))


class T5Stack(nn.Module):
    def __init__(self, cfg: T5EncoderConfig):
        super().__init__()
        self.block = nn.ModuleList(T5Block(cfg, i == 0) for i in range(cfg.num_layers))
        self.final_layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)


class T5EncoderModel(nn.Module):
    """forward(ids [B, L] int64) -> last hidden state [B, L, d_model]. `shared` is the token embedding
    (transformers ties `encoder.embed_tokens` to it)."""

    def __init__(self, cfg: T5EncoderConfig, length: int):
        super().__init__()
        self.cfg = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = T5Stack(cfg)
        buckets = relative_buckets(length, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance)
        self.register_buffer("buckets", buckets, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        x = self.shared(ids)
        table = self.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
        bias = table(self.buckets[:n, :n]).permute(2, 0, 1)  # [H, L, L]
        bias = bias.reshape(1, self.cfg.num_heads, n, n).expand(b, -1, -1, -1).reshape(b * self.cfg.num_heads, n, n)
        for block in self.encoder.block:
            x = block(x, bias)
        return self.encoder.final_layer_norm(x)
