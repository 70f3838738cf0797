"""SD3's MMDiT block (diffusers `JointTransformerBlock`): two streams, one joint attention, adaLN-Zero."""

from __future__ import annotations

import torch
from torch import nn

from .attention import JointAttention, SelfAttention
from .layers import (
    AdaLayerNormContinuous,
    AdaLayerNormZero,
    FeedForward,
    LayerNorm,
    SD35AdaLayerNormZeroX,
    modulate,
)


class JointTransformerBlock(nn.Module):
    """With `dual_attention` (SD3.5's MMDiT-X) a second, image-only self-attention `attn2` follows the joint one."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        qk_norm: bool,
        context_pre_only: bool = False,
        dual_attention: bool = False,
    ):
        super().__init__()
        self.context_pre_only = context_pre_only
        self.dual_attention = dual_attention
        self.norm1 = SD35AdaLayerNormZeroX(dim) if dual_attention else AdaLayerNormZero(dim)
        self.norm1_context = AdaLayerNormContinuous(dim) if context_pre_only else AdaLayerNormZero(dim)
        self.attn = JointAttention(dim, heads, qk_norm, context_pre_only)
        self.attn2 = SelfAttention(dim, heads, qk_norm) if dual_attention else None
        self.norm2 = LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_hidden)
        if not context_pre_only:
            self.norm2_context = LayerNorm(dim)
            self.ff_context = FeedForward(dim, mlp_hidden)

    def forward(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        temb: torch.Tensor,
        core: nn.Module,
        text_out: bool = True,
        core2: nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text_out=False skips the text stream's update (the last block a depth plan runs needs none); core2 is
        the image-only attention core of `attn2`."""
        if self.dual_attention:
            norm_img, gate_msa, shift_mlp, scale_mlp, gate_mlp, norm_img2, gate_msa2 = self.norm1(img, temb)
        else:
            norm_img, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(img, temb)
        if self.context_pre_only:
            norm_txt = self.norm1_context(txt, temb)
        else:
            norm_txt, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(txt, temb)

        text_out = text_out and not self.context_pre_only
        attn_img, attn_txt = self.attn(norm_img, norm_txt, core, text_out)
        img = img + gate_msa * attn_img
        if self.attn2 is not None:
            img = img + gate_msa2 * self.attn2(norm_img2, core2)
        img = img + gate_mlp * self.ff(modulate(self.norm2(img), shift_mlp, scale_mlp))

        if not text_out:
            return img, txt  # the text stream ends here (SD3's last block, or the plan's last block)
        txt = txt + c_gate_msa * attn_txt
        txt = txt + c_gate_mlp * self.ff_context(modulate(self.norm2_context(txt), c_shift_mlp, c_scale_mlp))
        return img, txt
