"""Latency statistics and the end-to-end rule every transport and the planner share."""

from __future__ import annotations

import math
from typing import Any

# How an end-to-end figure is put together (printed in reports so nobody has to guess).
E2E_RULE = (
    "e2e = text encoder x1 + steps x denoise median x calls per step + decode; calls per step = 2 when the "
    "sampler uses classifier-free guidance (guidance scale != 1) and the bundle's denoise methods are not "
    "batched for it (manifest cfg_batch false), else 1; the unconditional (empty-prompt) text embedding is "
    "assumed computed once and cached by the app"
)
SCHEDULE_E2E_RULE = (
    "computed: the e2e rule with each step costing the denoise median of the point it runs (the schedule's step "
    "rule, docs/design.md); measured: wall (and process CPU) time of whole generations run through the bundle's "
    "methods as an app runs them (text encoder each run, the unconditional embedding cached, every step, decode)"
)


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list."""
    if not sorted_xs:
        raise ValueError("percentile of no samples")
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(samples: list[float]) -> dict[str, Any]:
    """min / median / p90 / mean and every sample (ms, in the order they ran)."""
    xs = sorted(samples)
    return {
        "min": round(xs[0], 4),
        "median": round(percentile(xs, 50), 4),
        "p90": round(percentile(xs, 90), 4),
        "mean": round(sum(xs) / len(xs), 4),
        "n": len(xs),
        "all": [round(x, 4) for x in samples],
    }


def guidance_rule(scheduler: dict[str, Any], cfg_batch: bool, guidance: float | None = None) -> dict[str, Any]:
    """Whether the sampler runs CFG, and how many denoise calls one step costs with a bundle of this scheduler
    whose denoise methods are (`cfg_batch`) or are not batched for it."""
    scale = float(scheduler.get("guidance_scale", 1.0) if guidance is None else guidance)
    cfg = scale != 1.0
    batched = bool(cfg_batch)
    return {
        "guidance_scale": scale,
        "cfg": cfg,
        "cfg_batch": batched,
        "denoise_calls_per_step": 2 if cfg and not batched else 1,
    }


def e2e_ms(
    denoise_median: float, steps: int, calls_per_step: int, text_ms: float | None, decode_ms: float | None
) -> float:
    return round((text_ms or 0.0) + steps * calls_per_step * denoise_median + (decode_ms or 0.0), 3)


def schedule_e2e_ms(
    steps_per_point: dict[str, int],
    calls_per_step: int,
    denoise_median: dict[str, float],
    text_ms: float | None,
    decode_ms: float | None,
) -> float:
    """The end-to-end rule with a step schedule: each step costs its own point's denoise median."""
    denoise = sum(n * calls_per_step * denoise_median[p] for p, n in steps_per_point.items() if n)
    return round((text_ms or 0.0) + denoise + (decode_ms or 0.0), 3)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower x (latency) and higher y (quality) are better."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])
