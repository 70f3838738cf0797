"""Representative denoise inputs: the latents and timesteps the reference sampler really visits."""

from __future__ import annotations

import torch

from .model.pipeline import Models
from .model.sampler import sample
from .operating_points import OperatingPoint

CALIBRATION_PROMPTS = (
    "a red circle",
    "two blue squares",
    "a green triangle left of a yellow square",
    "three purple circles",
)


@torch.no_grad()
def denoise_samples(
    models: Models, point: OperatingPoint, resolution: tuple[int, int], count: int, batch: int = 1, seed: int = 0
) -> list[tuple[torch.Tensor, ...]]:
    """`count` (latent, timestep, text, pooled) tuples recorded while sampling a few prompts."""
    cfg = models.cfg
    net = models.transformer.operating_point(point, resolution, "masked")
    seen: list[tuple[torch.Tensor, ...]] = []

    def record(latent, timestep, text, pooled):
        seen.append((latent, timestep, text, pooled))
        return net(latent, timestep, text, pooled)

    steps = max(2, min(cfg.scheduler.steps, count))
    lh, lw = cfg.latent_size(resolution)
    g = torch.Generator().manual_seed(seed)
    prompts = [CALIBRATION_PROMPTS[i % len(CALIBRATION_PROMPTS)] for i in range(max(1, count // steps))]
    for prompt in prompts:
        text, pooled = models.encode_prompt(prompt)
        noise = torch.randn(batch, cfg.transformer.in_channels, lh, lw, generator=g)
        sample(record, noise, text.expand(batch, -1, -1), pooled.expand(batch, -1), steps, cfg.scheduler.shift)
    stride = max(1, len(seen) // count)
    return seen[::stride][:count]
