"""transformers' `CLIPTextModelWithProjection`, with its tensor names, in the formulation XNNPACK delegates.

Causal attention on 3-D [B*H, L, D] batched matmuls with a constant causal bias (no padding mask: the SD3 pipeline
passes none), LayerNorm as matmul means (layers.LayerNorm), quick-GELU / exact GELU spelled out. The pooled output
is the final-normed state at the first end-of-text position (the first maximum id for configs with the legacy
`eos_token_id == 2`, as transformers does), picked by a one-hot row and a matmul instead of an index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sd3_config import CLIPTextConfig
from .layers import LayerNorm


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return F.gelu(x)
    raise ValueError(f"unsupported CLIP activation {name!r}")


class CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.out_proj = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).transpose(1, 2).reshape(b * self.heads, n, self.head_dim)

    def forward(self, x: torch.Tensor, causal_bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        scores = torch.bmm(q * self.head_dim**-0.5, k.transpose(1, 2)) + causal_bias
        out = torch.bmm(scores.softmax(-1), v).reshape(b, self.heads, n, self.head_dim).transpose(1, 2)
        return self.out_proj(out.reshape(b, n, c))


class CLIPMLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.act = act
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(activation(self.act, self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.self_attn = CLIPAttention(cfg.hidden_size, cfg.num_heads)
        self.layer_norm1 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, affine=True)
        self.mlp = CLIPMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, affine=True)

    def forward(self, x: torch.Tensor, causal_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), causal_bias)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.hidden_size)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg) for _ in range(cfg.num_layers))


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.embeddings = CLIPEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, affine=True)


class CLIPTextModelWithProjection(nn.Module):
    """forward(ids [B, L] int64) -> (hidden states of layer `hidden_layer` [B, L, C], projected pooled [B, P])."""

    def __init__(self, cfg: CLIPTextConfig, hidden_layer: int = -2):
        super().__init__()
        self.cfg = cfg
        self.text_model = CLIPTextTransformer(cfg)
        self.text_projection = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)
        # transformers' hidden_states[i]: 0 is the embeddings, i the output of layer i; SD3 takes [-2].
        self.hidden_index = hidden_layer % (cfg.num_layers + 1)
        n = cfg.max_positions
        causal = torch.full((n, n), float("-inf")).triu(1)
        self.register_buffer("causal_bias", causal, persistent=False)
        # earlier[i, j] = 1 when i < j: (hit @ earlier)[j] counts the hits before position j.
        self.register_buffer("earlier", torch.ones(n, n).triu(1), persistent=False)

    def _pool_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, 1, L]: one-hot of the first end-of-text position."""
        if self.cfg.eos_token_id == 2:  # transformers' legacy configs: the first position of the largest id
            target = ids.amax(dim=-1, keepdim=True)
        else:
            target = torch.full_like(ids[:, :1], self.cfg.eos_token_id)
        n = ids.shape[1]
        hit = (ids == target).to(torch.float32)
        first = hit * (torch.mm(hit, self.earlier[:n, :n]) == 0).to(torch.float32)
        return first.reshape(ids.shape[0], 1, n)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = ids.shape[1]
        tm = self.text_model
        x = tm.embeddings.token_embedding(ids) + tm.embeddings.position_embedding.weight[:n]
        bias = self.causal_bias[:n, :n]
        hidden = x
        for i, layer in enumerate(tm.encoder.layers):
            x = layer(x, bias)
            if i + 1 == self.hidden_index:
                hidden = x
        pooled = torch.bmm(self._pool_rows(ids), tm.final_layer_norm(x)).reshape(ids.shape[0], -1)
        return hidden, self.text_projection(pooled)
