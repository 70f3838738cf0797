"""Helpers shared by the benchmarks: timing, thread settings, tables, the mobile-scale model."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from elasticdit.config import ElasticConfig, ModelConfig, SchedulerConfig, SSBAConfig, TransformerConfig, VAEConfig


def set_all_threads(threads: int) -> None:
    """The same thread count for torch and XNNPACK (set before any .pte is loaded)."""
    from elasticdit.targets.android.runtime import set_threads

    torch.set_num_threads(threads)
    set_threads(threads)


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time in milliseconds of `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def timings_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def print_table(columns: list[str], rows: list[list[object]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))))


def mobile_config() -> ModelConfig:
    """The benchmarks' mobile-scale model: width 512 (8 heads of 64), 12 blocks, 512 px (1024 tokens at ratio 1,
    SSBA tile 8: a 4x4 tile grid), ratios 1/2/4, four depth plans; random weights, no VAE encoder."""
    return ModelConfig(
        transformer=TransformerConfig(
            hidden_size=512,
            num_heads=8,
            num_blocks=12,
            mlp_ratio=4.0,
            patch_size=2,
            in_channels=16,
            text_dim=512,
            text_len=77,
            pooled_dim=512,
            qk_norm=True,
        ),
        elastic=ElasticConfig(
            compression_ratios=(1, 2, 4),
            depths={
                "12": tuple(range(12)),
                "9": (0, 1, 2, 3, 4, 5, 8, 9, 11),
                "6": (0, 1, 2, 3, 10, 11),
                "4": (0, 1, 10, 11),
            },
        ),
        ssba=SSBAConfig(enabled=True, tile=8, window=1),
        scheduler=SchedulerConfig(shift=3.0, steps=20, guidance_scale=4.5),
        resolution=(512, 512),
        vae=VAEConfig(decoder_widths=(64, 32, 16), latent_blocks=2),
    )
