"""Small building blocks shared by the transformer, named as in diffusers so SD3 weights map one to one.

They are written in the formulation XNNPACK delegates whole (measured with executorch 1.5.1): means over the
last dim as a matmul with a constant averaging vector (`F.layer_norm` and `mean(-1)` are left outside the
delegate), tanh-GELU spelled out (the delegate silently runs exact GELU for `approximate="tanh"`), plain
slices instead of `chunk`, and `reshape` instead of `unsqueeze` for broadcasting. Inside `fused_kernels()`
LayerNorm and the GELU run as PyTorch's fused kernels instead: the same maths to float rounding, for training.
Inside `fp16_safe_norms()` (Core ML's lowering) the norms are spelled so float16 compute cannot overflow.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_FUSED = contextvars.ContextVar("elasticdit_fused_kernels", default=False)
_FP16_SAFE = contextvars.ContextVar("elasticdit_fp16_safe_norms", default=False)


@contextlib.contextmanager
def fused_kernels() -> Iterator[None]:
    """Within: `F.layer_norm` and `F.gelu(approximate="tanh")` instead of the spelled-out forms, one kernel each
    instead of five to eight, forward and backward (`F.rms_norm` would gain nothing: on the CPU it is composed of
    the same elementwise ops). Eager only: never export inside it, XNNPACK leaves these ops outside the delegate."""
    token = _FUSED.set(True)
    try:
        yield
    finally:
        _FUSED.reset(token)


@contextlib.contextmanager
def fp16_safe_norms() -> Iterator[None]:
    """Within: LayerNorm and RMSNorm scale each row by its largest magnitude before squaring (`_row_scaled`), the
    same maths, but no intermediate leaves [-4, 4] however large the activations are. Without it, a residual
    stream of ~2000 (the trained demo's blocks.3) squares to ~4e6, past float16's 65504: under Core ML's fp16
    compute the variance becomes inf and the norm's output collapses to 0. For tracing the Core ML programs
    (`lowering.Formulation.norms`)."""
    token = _FP16_SAFE.set(True)
    try:
        yield
    finally:
        _FP16_SAFE.reset(token)


def _row_scaled(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / s, eps / s^2) with s = max(max|x| over the last dim, sqrt(eps)) per row.

    A norm is invariant under x -> x / s when eps becomes eps / s^2, for any s > 0; with this s every |x / s| <= 1
    and eps / s^2 <= 1, so squares and their means stay small in float16, while the largest entry is +-1, so the
    mean of squares is not lost to underflow (a fixed scale factor would underflow the squares of small
    activations). eps / s^2 is formed as (sqrt(eps) / s)^2: s^2 itself would overflow for
    s > 255 and lose precision as a float16 subnormal for s near sqrt(eps); it underflows to 0 only where it is
    below float16's resolution of the variance anyway. The floor sqrt(eps) keeps an all-zero row finite.
    """
    root = math.sqrt(eps)
    scale = torch.clamp_min(torch.amax(torch.abs(x), dim=-1, keepdim=True), root)
    # not `root / scale`: that traces as reciprocal, which coremltools converts to MIL `inverse`, 1 / (s + 1e-4)
    ratio = torch.full_like(scale, root) / scale
    return x / scale, ratio * ratio


def averaging_vector(dim: int) -> torch.Tensor:
    """[1, dim]: `F.linear(x, avg)` is the mean over the last dim as one delegated matmul."""
    return torch.full((1, dim), 1.0 / dim)


class LayerNorm(nn.Module):
    """LayerNorm; without affine parameters (every adaLN norm in SD3, eps 1e-6) unless asked."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = False):
        super().__init__()
        self.eps = eps
        self.register_buffer("avg", averaging_vector(dim), persistent=False)
        if affine:
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _FUSED.get():
            return F.layer_norm(x, x.shape[-1:], getattr(self, "weight", None), getattr(self, "bias", None), self.eps)
        eps: torch.Tensor | float = self.eps
        if _FP16_SAFE.get():
            x, eps = _row_scaled(x, self.eps)
        centred = x - F.linear(x, self.avg)
        x = centred * torch.rsqrt(F.linear(centred * centred, self.avg) + eps)
        return x * self.weight + self.bias if hasattr(self, "weight") else x


class RMSNorm(nn.Module):
    """qk-norm over the head dimension (diffusers `RMSNorm(dim_head, eps=1e-6)`)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("avg", averaging_vector(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps: torch.Tensor | float = self.eps
        if _FP16_SAFE.get():
            x, eps = _row_scaled(x, self.eps)
        return x * torch.rsqrt(F.linear(x * x, self.avg) + eps) * self.weight


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    if _FUSED.get():
        return F.gelu(x, approximate="tanh")
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


class GELUProj(nn.Module):
    """diffusers `GELU(approximate="tanh")`: a projection then tanh-GELU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(self.proj(x))


class FeedForward(nn.Module):
    """`ff.net.0.proj` -> GELU-tanh -> `ff.net.2`; index 1 is diffusers' dropout."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, hidden), nn.Identity(), nn.Linear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def split_last(x: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """`chunk` along the last dim as plain slices, each reshaped [B, 1, C] to broadcast over tokens."""
    b, width = x.shape[0], x.shape[-1] // parts
    return [x[:, i * width : (i + 1) * width].reshape(b, 1, width) for i in range(parts)]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1.0 + scale) + shift


class AdaLayerNormZero(nn.Module):
    """Six modulation vectors from the conditioning: shift/scale/gate for attention and for the MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 6 * dim)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = split_last(self.linear(F.silu(temb)), 6)
        return modulate(self.norm(x), shift_msa, scale_msa), gate_msa, shift_mlp, scale_mlp, gate_mlp


class SD35AdaLayerNormZeroX(nn.Module):
    """MMDiT-X's norm1: AdaLayerNormZero's six vectors plus shift/scale/gate of the second attention (`attn2`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 9 * dim)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, shift2, scale2, gate2 = split_last(
            self.linear(F.silu(temb)), 9
        )
        normed = self.norm(x)
        return (
            modulate(normed, shift_msa, scale_msa),
            gate_msa,
            shift_mlp,
            scale_mlp,
            gate_mlp,
            modulate(normed, shift2, scale2),
            gate2,
        )


class AdaLayerNormContinuous(nn.Module):
    """Final (and SD3's last-block text) norm: scale first, then shift, as diffusers orders them."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = split_last(self.linear(F.silu(temb)), 2)
        return modulate(self.norm(x), shift, scale)
