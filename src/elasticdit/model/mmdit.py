"""SD3's MMDiT block (diffusers `JointTransformerBlock`): two streams, one joint attention, adaLN-Zero."""

from __future__ import annotations

import torch
from torch import nn

from .attention import JointAttention
from .layers import AdaLayerNormContinuous, AdaLayerNormZero, FeedForward, LayerNorm, modulate


class JointTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int, qk_norm: bool, context_pre_only: bool = False):
        super().__init__()
        self.context_pre_only = context_pre_only
        self.norm1 = AdaLayerNormZero(dim)
        self.norm1_context = AdaLayerNormContinuous(dim) if context_pre_only else AdaLayerNormZero(dim)
        self.attn = JointAttention(dim, heads, qk_norm, context_pre_only)
        self.norm2 = LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_hidden)
        if not context_pre_only:
            self.norm2_context = LayerNorm(dim)
            self.ff_context = FeedForward(dim, mlp_hidden)

    def forward(
        self, img: torch.Tensor, txt: torch.Tensor, temb: torch.Tensor, core: nn.Module, text_out: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text_out=False skips the text stream's update (the last block a depth plan runs needs none)."""
        norm_img, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(img, temb)
        if self.context_pre_only:
            norm_txt = self.norm1_context(txt, temb)
        else:
            norm_txt, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(txt, temb)

        text_out = text_out and not self.context_pre_only
        attn_img, attn_txt = self.attn(norm_img, norm_txt, core, text_out)
        img = img + gate_msa * attn_img
        img = img + gate_mlp * self.ff(modulate(self.norm2(img), shift_mlp, scale_mlp))

        if not text_out:
            return img, txt  # the text stream ends here (SD3's last block, or the plan's last block)
        txt = txt + c_gate_msa * attn_txt
        txt = txt + c_gate_mlp * self.ff_context(modulate(self.norm2_context(txt), c_shift_mlp, c_scale_mlp))
        return img, txt
