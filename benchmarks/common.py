"""Helpers shared by the benchmarks: timing, thread settings, tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


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
