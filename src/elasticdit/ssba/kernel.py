"""`kernel`: SSBA as one call of elasticdit's own ExecuTorch operator, `elasticdit::ssba_attention`.

Schema (defined here with torch.library, so torch.export and `to_executorch`, which picks the `.out` overload,
work without the C++ library; the C++ out variant is elasticdit/kernels/native/op_ssba_attention.cpp):

    ssba_attention(Tensor q, Tensor k, Tensor v, int grid_h, int grid_w, int tile, int window, int shift,
                   float scale) -> Tensor
    ssba_attention.out(..., *, Tensor(a!) out) -> Tensor(a!)

q, k, v: float32 [batch*heads, seq, dim] over the joint sequence [image tokens (raster), text tokens]; the text
length is seq - grid_h * grid_w. The pattern is SSBA's (pattern.py) with the grid rolled by `shift` (0, or
tile // 2 on shifted layers). In PyTorch the op runs the `tiles` maths, which equals the masked reference to
float32 rounding; ExecuTorch runs the C++ kernel, which computes each query tile against only its window's key
tiles and the text keys, flash-style, reading q/k/v in place (docs/ssba.md).

The graph holds just this op on q, k, v and the pattern's scalars: no tables, no gathers. A bundle that uses it
runs only on a runtime that has the kernel (the host loads elasticdit's kernels on demand, an app links them);
its manifest lists the op under `runtime_ops`. Recipes keep `tiles` for the stock runtime.
"""

from __future__ import annotations

import torch
from torch import nn

from .pattern import SSBAPattern, compile_pattern
from .tiles import TilesAttention

_ARGS = "Tensor q, Tensor k, Tensor v, int grid_h, int grid_w, int tile, int window, int shift, float scale"
_LIB = torch.library.Library("elasticdit", "DEF")  # kept alive for the process
_LIB.define(f"ssba_attention({_ARGS}) -> Tensor")
_LIB.define(f"ssba_attention.out({_ARGS}, *, Tensor(a!) out) -> Tensor(a!)")


def _reference(q, k, v, grid_h, grid_w, tile, window, shift, scale) -> torch.Tensor:
    if shift not in (0, tile // 2):
        raise ValueError(f"ssba_attention: shift must be 0 or tile // 2 = {tile // 2}, got {shift}")
    pattern = compile_pattern((grid_h, grid_w), tile, window, shift != 0, q.shape[1] - grid_h * grid_w)
    if pattern.is_dense:
        return torch.bmm(torch.bmm(q * scale, k.transpose(1, 2)).softmax(-1), v)
    core = TilesAttention(q.shape[-1], pattern)
    core.scale = scale
    return core(q, k, v)


@torch.library.impl(_LIB, "ssba_attention", "CompositeExplicitAutograd")
def _ssba_attention(q, k, v, grid_h, grid_w, tile, window, shift, scale):
    return _reference(q, k, v, grid_h, grid_w, tile, window, shift, scale)


@torch.library.impl(_LIB, "ssba_attention.out", "CompositeExplicitAutograd")
def _ssba_attention_out(q, k, v, grid_h, grid_w, tile, window, shift, scale, *, out):
    out.copy_(_reference(q, k, v, grid_h, grid_w, tile, window, shift, scale))
    return out


@torch.library.register_fake("elasticdit::ssba_attention")
def _ssba_attention_fake(q, k, v, grid_h, grid_w, tile, window, shift, scale):
    torch._check(q.dim() == 3 and q.shape == k.shape == v.shape, lambda: "q, k, v: one [B*H, S, D] shape")
    torch._check(q.shape[1] >= grid_h * grid_w, lambda: "the sequence is shorter than the image grid")
    return torch.empty_like(q)


class KernelAttention(nn.Module):
    def __init__(self, head_dim: int, pattern: SSBAPattern):
        super().__init__()
        self.scale = head_dim**-0.5
        self.pattern = pattern

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.pattern
        return torch.ops.elasticdit.ssba_attention(
            q.contiguous(), k.contiguous(), v.contiguous(), p.grid[0], p.grid[1], p.tile, p.window, p.shift, self.scale
        )
