"""`elasticdit plan`: the best operating point for a latency budget (and a memory budget) from profile results.

End-to-end latency is recomputed for the requested number of steps from the per-step figures the profile
measured (same rule as the profile: text encoder + steps x denoise median x calls per step + decode). Among the
points that fit, the best is the one with the highest quality score when every point has one (from the
profile's `--quality` or plan's own `--quality`), else the one with the most GFLOPs per step (more compute is
the better-quality proxy across an elastic model's ratios and depths); ties go to the faster point.

Memory: a point whose measured peak (or, when the profile measured none, its planned memory from the bundle's
manifest: resident weight bytes + the planned activation arena) passes the budget (`--memory-mb`, or the
`--device` profile's app memory) is excluded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ProfileError
from .profile.stats import e2e_ms


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"cannot read profile results {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("operating_points"), list):
        raise ProfileError(f"{path} is not an `elasticdit profile --json` result (no operating_points list)")
    if "settings" not in doc or "denoise_calls_per_step" not in doc["settings"]:
        raise ProfileError(f"{path} lacks settings.denoise_calls_per_step (not written by `elasticdit profile`)")
    for p in doc["operating_points"]:
        if "name" not in p or not isinstance((p.get("denoise_ms") or {}).get("median"), int | float):
            raise ProfileError(f"{path}: an operating point lacks name or denoise_ms.median")
    return doc


def planned_mb(point: dict[str, Any]) -> float | None:
    """A point's planned memory from its bundle's manifest (resident weights + the planned activation arena),
    for a profile that measured no peak; None when the bundle states no weight bytes."""
    weights = point.get("weight_bytes")
    if not weights:
        return None
    return round((weights + (point.get("arena_bytes") or 0)) / 2**20, 2)


def plan(
    results: dict[str, Any],
    budget_ms: float,
    memory_mb: float | None = None,
    steps: int | None = None,
    scores: dict[str, float] | None = None,
    memory_source: str | None = None,
) -> dict[str, Any]:
    if budget_ms <= 0:
        raise ProfileError("--budget-ms must be positive")
    if steps is not None and steps < 1:
        raise ProfileError("--steps must be at least 1")
    settings = results["settings"]
    steps = steps or int(settings["steps"])
    calls = int(settings["denoise_calls_per_step"])
    points = results["operating_points"]
    scores = dict(scores or {})
    for p in points:
        if "score" in p and p["name"] not in scores:
            scores[p["name"]] = float(p["score"])
    by_score = bool(points) and all(p["name"] in scores for p in points)

    rows, rejected = [], []
    for p in points:
        text = (p.get("text_encoder_ms") or {}).get("median")
        decode = (p.get("decode_ms") or {}).get("median")
        row = {
            "name": p["name"],
            "e2e_ms": e2e_ms(p["denoise_ms"]["median"], steps, calls, text, decode),
            "denoise_ms": p["denoise_ms"]["median"],
            "peak_memory_mb": p.get("peak_memory_mb"),
            "gflops": p.get("gflops"),
            "score": scores.get(p["name"]),
        }
        planned = planned_mb(p)
        if planned is not None:  # a bundle that states its weight bytes
            row["planned_memory_mb"] = planned
        measured = row["peak_memory_mb"] is not None
        memory = row["peak_memory_mb"] if measured else planned
        if row["e2e_ms"] > budget_ms:
            rejected.append({**row, "reason": f"{row['e2e_ms']:.1f} ms > {budget_ms:g} ms"})
        elif memory_mb is not None and memory is not None and memory > memory_mb:
            basis = "" if measured else " planned (weights + arena)"
            rejected.append({**row, "reason": f"{memory:.0f} MB{basis} > {memory_mb:g} MB"})
        else:
            row["memory_checked"] = memory_mb is None or memory is not None
            rows.append(row)
    key = "score" if by_score else "gflops"
    rows.sort(key=lambda r: (-(r[key] or 0.0), r["e2e_ms"]))
    summary = {
        "budget_ms": budget_ms,
        "memory_mb": memory_mb,
        "memory_source": memory_source,
        "steps": steps,
        "denoise_calls_per_step": calls,
        "ranked_by": key,
        "device": results.get("device", {}).get("name") or results.get("device", {}).get("kind"),
        "profile_complete": results.get("complete", True),
        "unmeasured": list(results.get("missing", [])),
    }
    if not rows:
        fastest = min(rejected, key=lambda r: r["e2e_ms"], default=None)
        hint = ""
        if fastest:
            hint = f"; the fastest, {fastest['name']}, needs {fastest['e2e_ms']:.1f} ms"
            if fastest["peak_memory_mb"] is not None:
                hint += f" and {fastest['peak_memory_mb']:.0f} MB"
        memory = f" and {memory_mb:g} MB" if memory_mb is not None else ""
        raise ProfileError(
            f"no operating point fits {budget_ms:g} ms{memory} at {steps} steps{hint}: raise the "
            "budget, use fewer steps, or export lighter operating points"
        )
    return {
        **summary,
        "choice": rows[0],
        "candidates": rows[1:],
        "rejected": sorted(rejected, key=lambda r: r["e2e_ms"]),
    }
