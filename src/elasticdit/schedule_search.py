"""`eval --search-schedules`: the quality table `plan` needs for step schedules, and the Pareto front of schedules
against single operating points.

1. Every operating point is scored (`evaluation.evaluate_source`, the held-out prompts, one noise seed each).
2. The family is built from the points on the single points' Pareto front (cost vs score; at most `max_points`,
   the cheapest and the richest always among them) or the points given: for every pair, two-phase splits at each
   share of `shares` in both orders (cheap-first `c:s,r:1-s` and its mirror rich-first `r:1-s,c:s`, which runs
   the same number of steps of each point, so the same GFLOPs); for every triple, three-phase splits at
   THREE_PHASE_SHARES in both orders. Schedules that give the same point to every step as another (or as a single
   point) at this step count are scored once.
3. Each schedule is scored on the same prompts and noise. Every candidate gets its cost (GFLOPs per image, CFG
   counted; with a profile also the computed end-to-end wall and CPU ms), its score under the primary metric and
   the second one, and its paired difference from the full point (the default point) on the same prompts with
   that difference's standard error (`paired`).
4. The fronts (all candidates, single points only, schedules only) on the chosen cost axis, and the mirror-pair
   comparison of cheap-first and rich-first, go to pareto.json (also a quality table for `plan --quality`) and
   pareto.png.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from .evaluation import evaluate_source
from .generation import GenerationError, Source, open_source
from .profile.stats import pareto_front, schedule_e2e_ms
from .schedules import Phase, Schedule, ordering

SHARES = (0.25, 0.5, 0.75)
THREE_PHASE_SHARES = ((0.25, 0.25, 0.5), (0.5, 0.25, 0.25), (0.34, 0.33, 0.33))
PER_PROMPT = {"score": "passed", "strict_score": "strict"}  # a metric -> its per-prompt pass flag
COSTS = ("gflops_per_image", "e2e_ms", "e2e_cpu_ms")


def family(points: list[str], shares: tuple[float, ...] = SHARES) -> list[Schedule]:
    """Two- and three-phase splits of `points` (ordered cheapest first), cheap-first and rich-first."""
    out = []
    for cheap, rich in itertools.combinations(points, 2):
        for s in shares:
            out.append(Schedule((Phase(cheap, s), Phase(rich, round(1 - s, 6)))))
            out.append(Schedule((Phase(rich, round(1 - s, 6)), Phase(cheap, s))))
    for triple in itertools.combinations(points, 3):
        for split in THREE_PHASE_SHARES:
            out.append(Schedule(tuple(Phase(p, s) for p, s in zip(triple, split, strict=True))))
            out.append(Schedule(tuple(Phase(p, s) for p, s in zip(triple[::-1], split[::-1], strict=True))))
    return out


def distinct(schedules: list[Schedule], steps: int, singles: list[str]) -> list[Schedule]:
    """Drop a schedule whose per-step points equal a single point's or an earlier schedule's at `steps` steps."""
    seen = {tuple([p] * steps) for p in singles}
    out = []
    for s in schedules:
        key = tuple(s.step_points(steps))
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def paired(a: list[bool], b: list[bool]) -> tuple[float, float]:
    """Mean of a - b over the same prompts, and its standard error (sample std of the differences / sqrt(n))."""
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def front_points(rows: list[dict[str, Any]], metric: str, max_points: int) -> list[str]:
    """The single points on the cost-vs-score front, cheapest first; at most `max_points`, keeping both ends."""
    xy = [(r["gflops_per_image"], r[metric]) for r in rows]
    front = [rows[i]["name"] for i in pareto_front(xy)]
    if len(front) > max_points >= 2:
        picks = sorted({round(i * (len(front) - 1) / (max_points - 1)) for i in range(max_points)})
        front = [front[i] for i in picks]
    return front


def _profile_costs(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per point: its denoise wall and CPU medians; under '': calls per step, text encoder and decoder medians."""

    def median(section: dict[str, Any] | None, key: str) -> float | None:
        return ((section or {}).get(key) or {}).get("median")

    aux: dict[str, Any] = {"calls": int(profile["settings"]["denoise_calls_per_step"])}
    for key in ("ms", "cpu_ms"):
        aux[f"text_{key}"] = median(profile.get("text_encoder"), key)
        aux[f"decode_{key}"] = median(profile.get("decoder"), key)
    table = {"": aux}
    for p in profile["operating_points"]:
        table[p["name"]] = {"ms": p["denoise_ms"]["median"], "cpu_ms": (p.get("denoise_cpu_ms") or {}).get("median")}
    return table


def _latency(counts: dict[str, int], costs: dict[str, dict[str, float]], key: str) -> float | None:
    aux = costs[""]
    if any(p not in costs or costs[p][key] is None for p in counts):
        return None
    medians = {p: costs[p][key] for p in counts}
    return schedule_e2e_ms(counts, aux["calls"], medians, aux.get(f"text_{key}"), aux.get(f"decode_{key}"))


def search(
    source: Source | str | Path | None,
    prompts: int = 64,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    points: list[str] | None = None,
    shares: tuple[float, ...] = SHARES,
    max_points: int = 4,
    metric: str | None = None,
    profile: dict[str, Any] | None = None,
    cost: str = "gflops_per_image",
    progress: bool | None = None,
) -> dict[str, Any]:
    if cost not in COSTS:
        raise GenerationError(f"--cost must be one of {', '.join(COSTS)}, got {cost}")
    if cost != "gflops_per_image" and profile is None:
        raise GenerationError(f"--cost {cost} needs --profile (per-point step latencies)")
    if any(not 0 < s < 1 for s in shares):
        raise GenerationError(f"--shares must lie strictly between 0 and 1, got {shares}")
    src = source if isinstance(source, Source) else open_source(source, threads)
    used_steps, used_guidance = src.settings(steps, guidance)
    common = {"prompts": prompts, "steps": used_steps, "guidance": used_guidance, "seed": seed}
    singles = evaluate_source(src, **common, include_results=True, progress=progress)
    rows = singles["operating_points"]
    metric = metric or ("strict_score" if "strict_score" in rows[0] else "score")
    if metric not in PER_PROMPT or metric not in rows[0]:
        raise GenerationError(f"--metric {metric} is not reported by this scorer (it reports score)")
    second = "score" if metric != "score" else None
    names = points or front_points(rows, metric, max_points)
    gflops = {p.name: p.gflops for p in src.points}
    names = sorted((src.point(n).name for n in names), key=lambda n: gflops[n])
    schedules = distinct(family(names, shares), used_steps, [r["name"] for r in rows])
    scored = evaluate_source(src, **common, schedules=schedules, include_results=True, progress=progress)
    full = next(r for r in rows if r["name"] == src.default_point)
    costs = _profile_costs(profile) if profile else None
    table = []
    for kind, row in [("point", r) for r in rows] + [("schedule", r) for r in scored.get("schedules", [])]:
        schedule = Schedule(tuple(Phase(p["point"], p["share"]) for p in row["phases"])) if kind == "schedule" else None
        counts = schedule.steps_per_point(used_steps) if schedule else {row["name"]: used_steps}
        entry = {
            "name": row["name"],
            "kind": kind,
            "ordering": ordering(schedule, gflops) if schedule else "single",
            **({"spec": row["spec"], "phases": row["phases"]} if schedule else {}),
            "steps_per_point": counts,
            "gflops_per_image": row["gflops_per_image"],
        }
        if costs is not None:
            entry["e2e_ms"] = _latency(counts, costs, "ms")
            entry["e2e_cpu_ms"] = _latency(counts, costs, "cpu_ms")
        for m in filter(None, (metric, second)):
            flags = [r[PER_PROMPT[m]] for r in row["results"]]
            diff, se = paired(flags, [r[PER_PROMPT[m]] for r in full["results"]])
            entry[m] = row[m]
            entry[f"{m}_std"] = row.get(f"{m}_std")
            entry[f"{m}_vs_full"] = {"diff": round(diff, 6), "std": round(se, 6), "within_1_sigma": diff >= -se}
        table.append(entry)
    doc = {
        "source": singles["source"],
        "kind": singles["kind"],
        **common,
        "prompt_seed": singles["prompt_seed"],
        "metric": metric,
        "second_metric": second,
        "cost_axis": cost,
        "full_point": src.default_point,
        "family_points": names,
        "shares": list(shares),
        "three_phase_shares": [list(s) for s in THREE_PHASE_SHARES],
        "candidates": table,
        **fronts(table, metric, cost),
        "orderings": compare_orderings(table, metric, second),
        "operating_points": [{k: v for k, v in r.items() if k != "results"} for r in rows],
        "schedules": [{k: v for k, v in r.items() if k != "results"} for r in scored.get("schedules", [])],
    }
    if profile is not None:
        doc["profile"] = {"device": profile.get("device"), "settings": profile.get("settings")}
    return doc


def fronts(table: list[dict[str, Any]], metric: str, cost: str) -> dict[str, Any]:
    """The Pareto fronts on (cost, metric) and, for each candidate on the overall front, the best single point at
    no more cost (what the schedules add over the points, across the cost range)."""
    usable = [r for r in table if r.get(cost) is not None]

    def front(rows: list[dict[str, Any]]) -> list[str]:
        return [rows[i]["name"] for i in pareto_front([(r[cost], r[metric]) for r in rows])]

    points = [r for r in usable if r["kind"] == "point"]
    overall = front(usable)
    gains = []
    for name in overall:
        row = next(r for r in usable if r["name"] == name)
        below = [p for p in points if p[cost] <= row[cost]]
        best = max(below, key=lambda p: p[metric], default=None)
        gains.append(
            {
                "name": name,
                "kind": row["kind"],
                cost: row[cost],
                metric: row[metric],
                "best_point_at_or_below_cost": best["name"] if best else None,
                "gain": round(row[metric] - best[metric], 6) if best else None,
            }
        )
    return {
        "front": overall,
        "points_front": front(points),
        "schedules_front": front([r for r in usable if r["kind"] == "schedule"]),
        "front_vs_points": gains,
    }


def compare_orderings(table: list[dict[str, Any]], metric: str, second: str | None) -> dict[str, Any]:
    """Cheap-first against its mirror rich-first (same points, same step counts, reversed): per pair the score
    difference, and over all pairs the mean difference, its paired standard error and the wins of each."""
    by_phases = {tuple((p["point"], p["share"]) for p in r["phases"]): r for r in table if r["kind"] == "schedule"}
    pairs = []
    for key, row in by_phases.items():
        mirror = by_phases.get(key[::-1])
        if row["ordering"] == "cheap-first" and mirror is not None and mirror["ordering"] == "rich-first":
            pair = {"cheap_first": row["name"], "rich_first": mirror["name"]}
            for m in filter(None, (metric, second)):
                pair[f"{m}_diff"] = round(row[m] - mirror[m], 6)
            pairs.append(pair)
    summary: dict[str, Any] = {"pairs": pairs}
    for m in filter(None, (metric, second)):
        diffs = [p[f"{m}_diff"] for p in pairs]
        if diffs:
            mean = sum(diffs) / len(diffs)
            summary[m] = {
                "mean_diff_cheap_minus_rich": round(mean, 6),
                "cheap_first_wins": sum(d > 0 for d in diffs),
                "rich_first_wins": sum(d < 0 for d in diffs),
                "ties": sum(d == 0 for d in diffs),
            }
    return summary


def write_outputs(doc: dict[str, Any], out: Path) -> list[Path]:
    """pareto.json and pareto.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "pareto.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return [path, plot(doc, out / "pareto.png")]


def plot(doc: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost, metric = doc["cost_axis"], doc["metric"]
    rows = [r for r in doc["candidates"] if r.get(cost) is not None]
    style = {
        "single": ("o", "#34495e", "single point"),
        "cheap-first": ("^", "#2e86c1", "cheap-first schedule"),
        "rich-first": ("v", "#e67e22", "rich-first schedule"),
        "mixed": ("D", "#27ae60", "mixed schedule"),
    }
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for kind, (marker, colour, label) in style.items():
        group = [r for r in rows if r["ordering"] == kind]
        if group:
            ax.scatter(
                [r[cost] for r in group],
                [r[metric] for r in group],
                marker=marker,
                color=colour,
                label=label,
                s=48 if kind == "single" else 28,
                alpha=0.9 if kind == "single" else 0.7,
                zorder=3,
            )
    for r in rows:
        if r["kind"] == "point":
            ax.annotate(r["name"], (r[cost], r[metric]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    by_name = {r["name"]: r for r in rows}
    for names, colour, label in (
        (doc["points_front"], "#7f8c8d", "single points' front"),
        (doc["front"], "#c0392b", "front of all"),
    ):
        ax.step(
            [by_name[n][cost] for n in names],
            [by_name[n][metric] for n in names],
            where="post",
            color=colour,
            label=label,
            zorder=2,
        )
    ax.set_xscale("log")
    axis = {
        "gflops_per_image": "GFLOPs per image (denoise steps, CFG counted)",
        "e2e_ms": "end-to-end latency, ms (computed from per-point step medians)",
        "e2e_cpu_ms": "end-to-end CPU time, ms (computed from per-point step medians)",
    }[cost]
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{metric} ({doc['prompts']} held-out prompts)")
    ax.set_title(f"Step schedules vs single points ({doc['steps']} steps, guidance {doc['guidance']:g})")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
