"""`eval`: the demo scorer's accuracy per operating point, with the point's GFLOPs: the quality axis.

Prompts are the first N held-out scenes of `heldout_prompts(N, PROMPT_SEED)` (a stream the training never
draws from); prompt i is sampled from noise seed `seed + i`, so every operating point sees the same prompts
and the same starting noise. One image per prompt, scored pass/fail by `demo.scorer` under two rules: `score`
(and `score_std`, `per_category`, `mean_category_accuracy`, `passed`) is GenEval's rule (every named object with
its exact count, unnamed objects ignored); `strict_score` (and `strict_score_std`, `strict_per_category`,
`strict_mean_category_accuracy`, `strict_passed`) also needs nothing in the image but the named objects.
A checkpoint's `gflops` is the deployed graph's (SSBA lowered as `inspect` and the android export lower it), a
bundle's is its manifest's.

Step schedules (`schedules`) are scored the same way, on the same prompts and noise; a row's `gflops_per_image`
is the GFLOPs of the steps actually run (each step's point, twice per step under guidance), so a schedule and a
point are compared on one cost axis.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .demo.scorer import evaluate as score_images
from .demo.shapes import heldout_prompts
from .generation import GenerationError, Source, open_source
from .progress import reporter
from .schedules import Schedule

PROMPT_SEED = 0


def binomial_std(p: float, n: int) -> float:
    """The sampling noise of an accuracy p measured over n pass/fail prompts (binomial standard error, with
    Laplace's (k + 1) / (n + 2) so that a score of 0 or 1 still carries noise)."""
    if not n:
        return 0.0
    smoothed = (p * n + 1.0) / (n + 2.0)
    return math.sqrt(smoothed * (1.0 - smoothed) / n)


def evaluate_source(
    source: Source | str | Path | None = None,
    prompts: int = 64,
    ops: list[str] | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool | None = None,
    include_results: bool = False,
    prompt_seed: int = PROMPT_SEED,
    schedules: list[str | Schedule] | None = None,
) -> dict[str, Any]:
    """{"operating_points": [{"name", "gflops", "score", "strict_score", "per_category", ...}], ...} for a
    bundle or checkpoint; with `schedules` (specs or a bundle's schedule names) also {"schedules": [{"name",
    "spec", "phases", "steps_per_point", "gflops_per_image", "score", "strict_score", ...}]}. With `ops` empty
    and schedules given, only the schedules are scored."""
    if prompts <= 0:
        raise GenerationError(f"--prompts must be positive, got {prompts}")
    src = source if isinstance(source, Source) else open_source(source, threads)
    chosen = [src.point(name) for name in ops] if ops else ([] if schedules else list(src.points))
    points = sorted(set(chosen), key=src.points.index)
    plans = [src.schedule(s) for s in schedules or []]
    used_steps, used_guidance = src.settings(steps, guidance)
    scenes = heldout_prompts(prompts, prompt_seed)
    texts = [s.prompt for s in scenes]
    seeds = [seed + i for i in range(prompts)]
    rows, schedule_rows = [], []

    def scored(what: str | Schedule, label: str) -> dict[str, Any]:
        report.stage(f"{label}: sampling {prompts} prompts")
        images = src.generate_many(texts, seeds, what, used_steps, used_guidance, on_image=report.advance)
        return score_row(score_images(images, texts), prompts, include_results)

    with reporter((len(points) + len(plans)) * prompts, progress) as report:
        for point in points:
            per_image = point.gflops * used_steps * (2 if used_guidance != 1.0 else 1)
            head = {"name": point.name, "compression_ratio": point.ratio, "depth": point.depth}
            rows.append(
                {**head, "gflops": point.gflops, "gflops_per_image": per_image, **scored(point.name, point.name)}
            )
        for plan in plans:
            per_image = src.gflops_per_image(plan, used_steps, used_guidance)
            head = {**plan.to_dict(), "name": plan.label, "steps_per_point": plan.steps_per_point(used_steps)}
            per_step = per_image / used_steps / (2 if used_guidance != 1.0 else 1)
            cost = {"gflops": round(per_step, 6), "gflops_per_image": round(per_image, 6)}
            schedule_rows.append({**head, **cost, **scored(plan, plan.label)})
    doc = {
        "source": str(getattr(src, "path", source)),
        "kind": src.kind,
        "resolution": list(src.resolution),
        "prompts": prompts,
        "prompt_seed": prompt_seed,
        "seed": seed,
        "steps": used_steps,
        "guidance": used_guidance,
        "operating_points": rows,
    }
    if plans:
        doc["schedules"] = schedule_rows
    return doc


def score_row(result: Any, prompts: int, include_results: bool) -> dict[str, Any]:
    """The scorer's figures for one point or schedule over the prompts."""
    row = {
        "score": result.accuracy,
        "score_std": binomial_std(result.accuracy, prompts),
        "mean_category_accuracy": result.mean_category_accuracy,
        "per_category": result.per_category,
        "passed": sum(r.passed for r in result.results),
        "strict_score": result.strict_accuracy,
        "strict_score_std": binomial_std(result.strict_accuracy, prompts),
        "strict_mean_category_accuracy": result.strict_mean_category_accuracy,
        "strict_per_category": result.strict_per_category,
        "strict_passed": sum(r.strict for r in result.results),
        "n": prompts,
    }
    if include_results:
        row["results"] = result.to_dict()["results"]
    return row
