"""A tiny text encoder: word ids -> per-token embeddings (the DiT's `text`) and a pooled vector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TextEncoderConfig

PAD, START, UNKNOWN = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<start>", "<unk>")


def tokenize(prompt: str, vocab: tuple[str, ...], length: int) -> list[int]:
    """Lower-cased words -> ids: `<start>`, the words (unknown ones as `<unk>`), then `<pad>` up to length."""
    index = {word: i for i, word in enumerate(vocab)}
    words = prompt.lower().replace(",", " ").split()
    ids = [START] + [index.get(w, UNKNOWN) for w in words]
    return (ids + [PAD] * length)[:length]


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.ln_1(x)).reshape(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * d**-0.5 + key_bias[:, None, None, :]
        x = x + self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln_2(x)), approximate="tanh"))


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, length: int, text_dim: int, pooled_dim: int):
        super().__init__()
        self.cfg, self.length = cfg, length
        self.token_embedding = nn.Embedding(len(cfg.vocab), cfg.width)
        self.position_embedding = nn.Parameter(torch.zeros(length, cfg.width))
        self.layers = nn.ModuleList(EncoderLayer(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.final_norm = nn.LayerNorm(cfg.width)
        self.text_proj = nn.Linear(cfg.width, text_dim)
        self.pooled_proj = nn.Linear(cfg.width, pooled_dim)

    def tokenize(self, prompt: str) -> torch.Tensor:
        return torch.tensor([tokenize(prompt, self.cfg.vocab, self.length)], dtype=torch.int64)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, L] int64 -> text [B, L, text_dim], pooled [B, pooled_dim]."""
        keep = (tokens != PAD).to(torch.float32)  # [B, L]; `<start>` guarantees one kept token
        key_bias = (keep - 1.0) * 1e9
        x = self.token_embedding(tokens) + self.position_embedding
        for layer in self.layers:
            x = layer(x, key_bias)
        x = self.final_norm(x)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        return self.text_proj(x), self.pooled_proj(pooled)
