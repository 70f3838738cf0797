"""A tiny text encoder: word ids -> per-token embeddings (the DiT's `text`) and a pooled vector."""

from __future__ import annotations

import torch
from torch import nn

from ..config import TextEncoderConfig
from .layers import LayerNorm, gelu_tanh

PAD, START, UNKNOWN = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<start>", "<unk>")


def tokenize(prompt: str, vocab: tuple[str, ...], length: int) -> list[int]:
    """Lower-cased words -> ids: `<start>`, the words (unknown ones as `<unk>`), then `<pad>` up to length."""
    index = {word: i for i, word in enumerate(vocab)}
    words = prompt.lower().replace(",", " ").split()
    ids = [START] + [index.get(w, UNKNOWN) for w in words]
    return (ids + [PAD] * length)[:length]


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer; attention on 3-D [B*H, L, D] batched matmuls (what XNNPACK delegates)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = LayerNorm(width, 1e-5, affine=True), LayerNorm(width, 1e-5, affine=True)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """key_bias [B*H, 1, L]: 0 for kept keys, -1e9 for padding."""
        b, n, c = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.ln_1(x)).reshape(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = (t.reshape(b * self.heads, n, d) for t in (q, k, v))
        scores = torch.bmm(q * d**-0.5, k.transpose(1, 2)) + key_bias
        attended = torch.bmm(scores.softmax(-1), v).reshape(b, self.heads, n, d).transpose(1, 2)
        x = x + self.proj(attended.reshape(b, n, c))
        return x + self.fc2(gelu_tanh(self.fc1(self.ln_2(x))))


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, length: int, text_dim: int, pooled_dim: int):
        super().__init__()
        self.cfg, self.length = cfg, length
        self.token_embedding = nn.Embedding(len(cfg.vocab), cfg.width)
        self.position_embedding = nn.Parameter(torch.zeros(length, cfg.width))
        self.layers = nn.ModuleList(EncoderLayer(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.final_norm = LayerNorm(cfg.width, 1e-5, affine=True)
        self.text_proj = nn.Linear(cfg.width, text_dim)
        self.pooled_proj = nn.Linear(cfg.width, pooled_dim)

    def tokenize(self, prompt: str) -> torch.Tensor:
        return torch.tensor([tokenize(prompt, self.cfg.vocab, self.length)], dtype=torch.int64)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, L] int64 -> text [B, L, text_dim], pooled [B, pooled_dim]."""
        b, n = tokens.shape
        keep = (tokens != PAD).to(torch.float32).reshape(b, 1, n)  # `<start>` guarantees one kept token
        key_bias = ((keep - 1.0) * 1e9).repeat_interleave(self.cfg.heads, dim=0)
        x = self.token_embedding(tokens) + self.position_embedding
        for layer in self.layers:
            x = layer(x, key_bias)
        x = self.final_norm(x)
        pooled = torch.bmm(keep / keep.sum(-1, keepdim=True), x).reshape(b, -1)  # mean over kept tokens
        return self.text_proj(x), self.pooled_proj(pooled)
