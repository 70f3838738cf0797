"""`elasticdit plan`: the best operating point or step schedule for a latency budget (and a memory budget) from
profile results.

End-to-end latency is recomputed for the requested number of steps from the per-step figures the profile
measured (same rule as the profile: text encoder + steps x denoise median x calls per step + decode; under a step
schedule each step costs the median of the point it runs). The candidates are the profile's operating points and
the step schedules of the quality table (`eval --json --schedule`, `eval --search-schedules`' pareto.json) and of
the profile (`profile --schedule`). Among those that fit, the best is the one with the highest quality score when
every candidate has one (from the profile's `--quality` or plan's own `--quality`), else the one with the most
GFLOPs per step (more compute is the better-quality proxy across an elastic model's ratios and depths); ties go to
the faster candidate.

Memory: a candidate whose measured peak (or, for a point the profile measured no peak of, its planned memory
from the bundle's manifest: resident weight bytes + the planned activation arena, the text encoder's and the
decoder's included) passes the budget (`--memory-mb`, or the `--device` profile's app memory) is excluded; a
schedule without a measured peak is excluded when one of its points' planned memory passes the budget (a lower
bound of what it keeps resident).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ElasticDiTError, ProfileError
from .profile.stats import e2e_ms, schedule_e2e_ms
from .schedules import Schedule, from_manifest


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


def check_resolution(results: dict[str, Any], resolution: tuple[int, int], path: str | Path) -> None:
    """A plan for `resolution` needs a profile measured there (its rows are that resolution's methods): a
    `ProfileError` naming both otherwise."""
    have = results.get("resolution")
    want = f"{resolution[0]}x{resolution[1]}"
    if not (isinstance(have, list) and len(have) == 2):
        raise ProfileError(f"{path} does not say which resolution it measured; profile again with --resolution {want}")
    if tuple(have) != tuple(resolution):
        raise ProfileError(
            f"{path} measured {have[0]}x{have[1]}, not {want}: profile the bundle with --resolution {want}"
        )


def planned_mb(point: dict[str, Any]) -> float | None:
    """A point's planned memory from its bundle's manifest (resident weights + the planned activation arena, and
    the same for the text encoder and decoder a generation loads with it), for a profile that measured no peak;
    None when the bundle states no weight bytes."""
    weights = point.get("weight_bytes")
    if not weights:
        return None
    return round((weights + (point.get("arena_bytes") or 0) + (point.get("companions_bytes") or 0)) / 2**20, 2)


def _schedule(row: Any, where: str) -> Schedule:
    if not isinstance(row, dict) or not isinstance(row.get("phases"), list):
        raise ProfileError(f"{where}: every schedule needs 'phases' [{{point, share}}, ...], got {row!r}")
    try:
        phases = from_manifest("s", row["phases"], where)
    except ElasticDiTError as exc:
        raise ProfileError(str(exc)) from None
    return Schedule(phases.phases, str(row.get("name") or ""))


def read_schedule_quality(path: str | Path, metric: str = "score") -> list[tuple[Schedule, float]]:
    """The `schedules` rows of a quality table (`eval --json`, pareto.json): each with its phases and `metric`."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"cannot read quality figures from {path}: {exc}") from None
    rows = doc.get("schedules", []) if isinstance(doc, dict) else []
    out = []
    for row in rows if isinstance(rows, list) else []:
        schedule = _schedule(row, str(path))
        if not isinstance(row.get(metric), int | float):
            raise ProfileError(f"{path}: schedule {schedule.label} has no numeric '{metric}'")
        out.append((schedule, float(row[metric])))
    return out


def _key(schedule: Schedule) -> tuple:
    return tuple((p.point, p.share) for p in schedule.phases)


def plan(
    results: dict[str, Any],
    budget_ms: float,
    memory_mb: float | None = None,
    steps: int | None = None,
    scores: dict[str, float] | None = None,
    memory_source: str | None = None,
    schedules: list[tuple[Schedule, float | None]] | None = None,
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

    rows = []
    for p in points:
        text = (p.get("text_encoder_ms") or {}).get("median")
        decode = (p.get("decode_ms") or {}).get("median")
        row = {
            "name": p["name"],
            "kind": "point",
            "e2e_ms": e2e_ms(p["denoise_ms"]["median"], steps, calls, text, decode),
            "denoise_ms": p["denoise_ms"]["median"],
            "peak_memory_mb": p.get("peak_memory_mb"),
            "gflops": p.get("gflops"),
            "score": scores.get(p["name"]),
        }
        planned = planned_mb(p)
        if planned is not None:  # a bundle that states its weight bytes
            row["planned_memory_mb"] = planned
        rows.append(row)
    rows += schedule_rows(results, steps, calls, schedules or [])
    by_score = bool(rows) and all(r["score"] is not None for r in rows)

    fits, rejected = [], []
    for row in rows:
        measured = row["peak_memory_mb"] is not None
        resident = row["peak_memory_mb"] if measured else row.get("planned_memory_mb")
        if row.get("reason"):
            rejected.append(row)
        elif row["e2e_ms"] > budget_ms:
            rejected.append({**row, "reason": f"{row['e2e_ms']:.1f} ms > {budget_ms:g} ms"})
        elif memory_mb is not None and resident is not None and resident > memory_mb:
            basis = "" if measured else " planned (weights + arena)"
            rejected.append({**row, "reason": f"{resident:.0f} MB{basis} > {memory_mb:g} MB"})
        else:  # a schedule's planned memory is a lower bound: only a measured peak checks it
            row["memory_checked"] = memory_mb is None or measured or (row["kind"] == "point" and resident is not None)
            fits.append(row)
    key = "score" if by_score else "gflops"
    fits.sort(key=lambda r: (-(r[key] or 0.0), r["e2e_ms"]))
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
        "weighed": {"points": len(points), "schedules": len(rows) - len(points)},
    }
    if not fits:
        fastest = min((r for r in rejected if r["e2e_ms"] is not None), key=lambda r: r["e2e_ms"], default=None)
        hint = ""
        if fastest:
            hint = f"; the fastest, {fastest['name']}, needs {fastest['e2e_ms']:.1f} ms"
            if fastest["peak_memory_mb"] is not None:
                hint += f" and {fastest['peak_memory_mb']:.0f} MB"
        memory = f" and {memory_mb:g} MB" if memory_mb is not None else ""
        raise ProfileError(
            f"no operating point{' or schedule' if len(rows) > len(points) else ''} fits {budget_ms:g} ms{memory} "
            f"at {steps} steps{hint}: raise the "
            "budget, use fewer steps, or export lighter operating points"
        )
    return {
        **summary,
        "choice": fits[0],
        "candidates": fits[1:],
        "rejected": sorted(rejected, key=lambda r: (r["e2e_ms"] is None, r["e2e_ms"] or 0.0)),
    }


def schedule_rows(
    results: dict[str, Any], steps: int, calls: int, scored: list[tuple[Schedule, float | None]]
) -> list[dict[str, Any]]:
    """Candidate rows of the step schedules: the quality table's (with scores) and the profile's (with a measured
    peak memory and end-to-end time), one row per distinct schedule."""
    by_point = {p["name"]: p for p in results["operating_points"]}
    profiled = {}
    for row in results.get("schedules") or []:
        schedule = _schedule(row, "the profile's schedules")
        profiled[_key(schedule)] = (schedule, row)
    wanted: dict[tuple, tuple[Schedule, float | None]] = {}
    for schedule, score in scored:
        wanted.setdefault(_key(schedule), (schedule, score))
    for k, (schedule, _) in profiled.items():
        wanted.setdefault(k, (schedule, None))
    out = []
    for k, (schedule, score) in wanted.items():
        if schedule.single is not None:
            continue  # a one-point schedule is that point's row
        counts = schedule.steps_per_point(steps)
        missing = [p for p in schedule.points if p not in by_point]
        measured = profiled.get(k, (None, {}))[1]
        row: dict[str, Any] = {
            "name": schedule.label,
            "kind": "schedule",
            "spec": schedule.spec,
            "steps_per_point": counts,
            "e2e_ms": None,
            "peak_memory_mb": measured.get("peak_memory_mb"),
            "gflops": None,
            "score": score,
        }
        if missing:
            out.append({**row, "reason": f"not in the profile: {', '.join(missing)}"})
            continue
        first = by_point[schedule.points[0]]
        text = (first.get("text_encoder_ms") or {}).get("median")
        decode = (first.get("decode_ms") or {}).get("median")
        medians = {p: by_point[p]["denoise_ms"]["median"] for p in schedule.points}
        row["e2e_ms"] = schedule_e2e_ms(counts, calls, medians, text, decode)
        row["gflops"] = round(sum((by_point[p].get("gflops") or 0.0) * n for p, n in counts.items()) / steps, 6)
        planned = [m for p in schedule.points if (m := planned_mb(by_point[p])) is not None]
        if planned:  # the largest of its points': a lower bound of what the schedule keeps resident
            row["planned_memory_mb"] = max(planned)
        if measured.get("measured_e2e_ms") and int(results["settings"]["steps"]) == steps:
            row["measured_e2e_ms"] = measured["measured_e2e_ms"]["median"]
        out.append(row)
    return out
