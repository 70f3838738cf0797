"""Call the native SSBA kernel directly on torch tensors, outside ExecuTorch: eager checks of its numerics and
the benchmarks' probes. The arguments are the `elasticdit::ssba_attention` op's (elasticdit/ssba/kernel.py)."""

from __future__ import annotations

import ctypes

import torch

from ..errors import KernelError
from .build import load_kernels


def native_ssba_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int], tile: int, window: int, shift: int,
    scale: float, threaded: bool = True,
) -> torch.Tensor:  # fmt: skip
    """The kernel's output for q, k, v [B*H, S, D] (built and loaded on first use). `threaded` runs it on the
    ExecuTorch thread pool, as the runtime does."""
    lib = load_kernels()
    fn = lib.elasticdit_ssba_attention_f32
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 8 + [ctypes.c_float, ctypes.c_int32]
    if not (q.dim() == 3 and q.shape == k.shape == v.shape):
        shapes = [list(t.shape) for t in (q, k, v)]
        raise KernelError(f"ssba_attention: q, k, v must share one [B*H, S, D] shape, got {shapes}")
    q, k, v = (t.detach().float().contiguous() for t in (q, k, v))
    out = torch.empty_like(q)
    bh, seq, dim = q.shape
    problem = fn(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), bh, seq, dim, grid[0], grid[1], tile,
                 window, shift, scale, int(threaded))  # fmt: skip
    if problem is not None:
        raise KernelError(f"ssba_attention: {problem.decode()}")
    return out


def kernel_isa() -> str:
    """The instruction set the loaded library was built for (`avx512`, `avx2`, `neon`, ...)."""
    lib = load_kernels()
    lib.elasticdit_kernels_isa.restype = ctypes.c_char_p
    return lib.elasticdit_kernels_isa().decode()
