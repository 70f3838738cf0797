"""Joint text+image attention (SD3's `JointAttnProcessor2_0`) with a pluggable attention core."""

from __future__ import annotations

import torch
from torch import nn

from .layers import RMSNorm


class JointAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool, context_pre_only: bool):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.add_q_proj, self.add_k_proj, self.add_v_proj = (
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
            nn.Linear(dim, dim),
        )
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.to_add_out = None if context_pre_only else nn.Linear(dim, dim)
        self.norm_q = self.norm_k = self.norm_added_q = self.norm_added_k = None
        if qk_norm:
            self.norm_q, self.norm_k = RMSNorm(self.head_dim), RMSNorm(self.head_dim)
            self.norm_added_q, self.norm_added_k = RMSNorm(self.head_dim), RMSNorm(self.head_dim)

    def _heads(self, img: torch.Tensor, txt: torch.Tensor, norm_img, norm_txt) -> torch.Tensor:
        """[B, N, C] + [B, L, C] -> [B*H, N+L, D], image first."""
        b = img.shape[0]
        img = img.unflatten(-1, (self.heads, self.head_dim))
        txt = txt.unflatten(-1, (self.heads, self.head_dim))
        if norm_img is not None:
            img, txt = norm_img(img), norm_txt(txt)
        joint = torch.cat([img, txt], dim=1)  # [B, S, H, D]
        return joint.transpose(1, 2).reshape(b * self.heads, -1, self.head_dim)

    def forward(
        self, img: torch.Tensor, txt: torch.Tensor, core: nn.Module, text_out: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, c = img.shape
        q = self._heads(self.to_q(img), self.add_q_proj(txt), self.norm_q, self.norm_added_q)
        k = self._heads(self.to_k(img), self.add_k_proj(txt), self.norm_k, self.norm_added_k)
        v = self._heads(self.to_v(img), self.add_v_proj(txt), None, None)
        out = core(q, k, v)  # [B*H, S, D]
        out = out.reshape(b, self.heads, -1, self.head_dim).transpose(1, 2).reshape(b, -1, c)
        img_out = self.to_out[0](out[:, :n])
        txt_out = self.to_add_out(out[:, n:]) if text_out and self.to_add_out is not None else None
        return img_out, txt_out


class SelfAttention(nn.Module):
    """MMDiT-X's `attn2` (diffusers `Attention` with `AttnProcessor2_0`): image tokens only, optional qk RMSNorm."""

    def __init__(self, dim: int, heads: int, qk_norm: bool):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.norm_q = self.norm_k = None
        if qk_norm:
            self.norm_q, self.norm_k = RMSNorm(self.head_dim), RMSNorm(self.head_dim)

    def _heads(self, x: torch.Tensor, norm) -> torch.Tensor:
        b = x.shape[0]
        x = x.unflatten(-1, (self.heads, self.head_dim))
        if norm is not None:
            x = norm(x)
        return x.transpose(1, 2).reshape(b * self.heads, -1, self.head_dim)

    def forward(self, img: torch.Tensor, core: nn.Module) -> torch.Tensor:
        b, n, c = img.shape
        q = self._heads(self.to_q(img), self.norm_q)
        k = self._heads(self.to_k(img), self.norm_k)
        v = self._heads(self.to_v(img), None)
        out = core(q, k, v).reshape(b, self.heads, n, self.head_dim).transpose(1, 2).reshape(b, n, c)
        return self.to_out[0](out)
