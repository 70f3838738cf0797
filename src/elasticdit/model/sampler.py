"""Rectified-flow Euler sampling with SD3's time shift and optional classifier-free guidance.

x_sigma = (1 - sigma) * x0 + sigma * noise, velocity = noise - x0, so dx/dsigma = velocity and an Euler step
from sigma to sigma' is x + (sigma' - sigma) * velocity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def shifted_sigmas(steps: int, shift: float) -> torch.Tensor:
    """steps + 1 sigmas from 1 down to 0, warped by SD3's shift: s' = shift*s / (1 + (shift-1)*s)."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * s / (1 + (shift - 1) * s)).float()


def flow_match_sigmas(steps: int, shift: float, num_train_timesteps: int = 1000) -> torch.Tensor:
    """diffusers' `FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(steps)` sigmas, bit for bit (static
    shift): `steps` points evenly spaced from the shifted train table's first sigma (1) to its last (the shift of
    1 / num_train_timesteps), shifted once more, then 0. Computed with the same float32/float64 ops diffusers uses."""
    n = num_train_timesteps
    ends = torch.tensor([float(n), 1.0], dtype=torch.float32) / n
    ends = shift * ends / (1 + (shift - 1) * ends)
    sigma_max, sigma_min = ends[0].item(), ends[1].item()
    s = np.linspace(sigma_max * n, sigma_min * n, steps) / n
    s = shift * s / (1 + (shift - 1) * s)
    return torch.cat([torch.from_numpy(s).to(torch.float32), torch.zeros(1)])


def schedule_sigmas(kind: str, steps: int, shift: float, num_train_timesteps: int = 1000) -> torch.Tensor:
    """steps + 1 sigmas of a checkpoint's scheduler kind (config `scheduler.kind`)."""
    if kind == "flow_match_euler":
        return flow_match_sigmas(steps, shift, num_train_timesteps)
    if kind == "rectified_flow_euler":
        return shifted_sigmas(steps, shift)
    raise ValueError(f"unknown scheduler kind {kind!r}")


def sample(
    denoise: Denoise | Sequence[Denoise],
    noise: torch.Tensor,
    text: torch.Tensor,
    pooled: torch.Tensor,
    steps: int,
    shift: float,
    guidance: float = 1.0,
    uncond_text: torch.Tensor | None = None,
    uncond_pooled: torch.Tensor | None = None,
    batched_cfg: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    start_step: int = 0,
    sigmas: torch.Tensor | None = None,
) -> torch.Tensor:
    """The clean latent for `noise` [B, C, h, w]; with guidance > 1 the unconditional text is required.

    `denoise` is one network for every step, or a list of `steps` networks, step i running the i-th (a step
    schedule: `schedules.Schedule.step_points`). batched_cfg runs the conditional and unconditional passes as
    one batch of 2B (as a CFG bundle does); otherwise as two calls of batch B. `sigmas` (steps + 1 values, e.g.
    `schedule_sigmas`) replaces the default schedule `shifted_sigmas(steps, shift)`. With start_step k, `noise` is
    a latent already at the schedule's k-th sigma (e.g. an image noised to it) and only the remaining steps run.
    """
    cfg = guidance != 1.0
    if cfg and (uncond_text is None or uncond_pooled is None):
        raise ValueError("classifier-free guidance needs the unconditional text and pooled embeddings")
    if not 0 <= start_step < steps:
        raise ValueError(f"start_step must be in [0, {steps}), got {start_step}")
    per_step = list(denoise) if isinstance(denoise, list | tuple) else [denoise] * steps
    if len(per_step) != steps:
        raise ValueError(f"{len(per_step)} per-step networks for {steps} steps")
    if sigmas is None:
        sigmas = shifted_sigmas(steps, shift)
    elif sigmas.shape != (steps + 1,):
        raise ValueError(f"sigmas must hold steps + 1 = {steps + 1} values, got {tuple(sigmas.shape)}")
    x = noise
    for i in range(start_step, steps):
        denoise = per_step[i]
        sigma = sigmas[i].expand(x.shape[0]).to(x.dtype)
        if not cfg:
            v = denoise(x, sigma, text, pooled)
        elif batched_cfg:
            both = denoise(
                torch.cat([x, x]),
                torch.cat([sigma, sigma]),
                torch.cat([uncond_text, text]),
                torch.cat([uncond_pooled, pooled]),
            )
            v_uncond, v_cond = both.chunk(2)
            v = v_uncond + guidance * (v_cond - v_uncond)
        else:
            v_uncond = denoise(x, sigma, uncond_text, uncond_pooled)
            v = v_uncond + guidance * (denoise(x, sigma, text, pooled) - v_uncond)
        x = x + (sigmas[i + 1] - sigmas[i]) * v
        if on_step is not None:
            on_step(i, float(sigmas[i]))
    return x


def training_pair(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_sigma, target velocity) for rectified-flow training."""
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - s) * x0 + s * noise, noise - x0
