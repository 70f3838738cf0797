"""`generate` and `eval`: images from a bundle or a checkpoint, and the demo scorer's accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .app import (
    JsonOpt,
    ResolutionChoiceOpt,
    SourceArg,
    StepsOpt,
    app,
    out,
    print_json,
    reports_errors,
)

ScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        help="A step schedule instead of one point: r4_d3:0.3,r1_d6:0.7 (POINT:SHARE of the steps, in order), or a "
        "schedule the bundle's manifest names.",
        show_default=False,
    ),
]


@app.command()
@reports_errors
def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help='Text, e.g. "a red circle left of a blue square".')],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")],
    source: SourceArg = None,
    op: Annotated[
        str | None,
        typer.Option("--op", help="Operating point, e.g. r2_d4 (default: the full one).", show_default=False),
    ] = None,
    steps: StepsOpt = None,
    cfg: Annotated[
        float | None,
        typer.Option(
            "--cfg",
            help="Classifier-free guidance scale; 1 turns CFG off (default: the scheduler's).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Noise seed: the same seed gives the same image.")] = 0,
    noise: Annotated[
        Path | None,
        typer.Option(
            help="The initial latent instead of the seed's: a float32 .npy or one-tensor .safetensors [1, C, h, w].",
            show_default=False,
        ),
    ] = None,
    resolution: ResolutionChoiceOpt = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for a bundle's runtime.", show_default=False)] = None,
    runner: Annotated[
        str,
        typer.Option(
            help="python: this process (the bundle's runtime or the PyTorch reference); native: the bundle's C++ "
            "app-side runner, elasticdit-run (built on demand, docs/runtime.md); or a path to an elasticdit-run build."
        ),
    ] = "python",
    schedule: ScheduleOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Text to image on this host: a bundle through its methods, or a checkpoint through the PyTorch reference."""
    from ..generation import GenerationError, generate_image, open_source
    from ..progress import reporter
    from .app import parse_resolution

    if op is not None and schedule is not None:
        raise GenerationError("give --op or --schedule, not both (a point is the one-phase schedule)")
    if runner == "python":
        src = open_source(source, threads, parse_resolution(resolution) if resolution else None)
    else:
        from ..native_generation import AppRunnerSource

        src = AppRunnerSource(source, runner, threads, parse_resolution(resolution) if resolution else None)
    total, _ = src.settings(steps, cfg)
    with reporter(total) as report:
        report.stage(f"denoising ({src.kind}{'' if runner == 'python' else ', elasticdit-run'})")
        summary = generate_image(
            src, prompt, output, schedule or op, steps, cfg, seed, on_step=lambda i, s: report.advance(), noise=noise
        )
    timings = getattr(src, "timings", None)
    if timings is not None:
        summary.update(runner=runner, timings=timings)
    if as_json:
        print_json(summary)
        return
    app = ""
    if timings is not None:
        e2e, load = timings["e2e_ms"]["median"], timings["load_ms"]["first"]["total"]
        app = f"; elasticdit-run: e2e {e2e:.1f} ms, load {load:.1f} ms, peak RSS {timings['peak_rss_mb']} MB"
    start = f"noise {summary['noise']}" if noise else f"seed {summary['seed']}"
    plan = summary.get("schedule")
    at = f"schedule {plan['name'] or plan['spec']}" if plan else summary["operating_point"]
    out.print(
        f"wrote {summary['output']}: {summary['prompt']!r} at {at} "
        f"({summary['gflops']:.3f} GFLOPs/step), {summary['steps']} steps, cfg {summary['guidance']:g}, "
        f"{start} ({summary['kind']}{app})",
        highlight=False,
        soft_wrap=True,
    )


@app.command(name="eval")
@reports_errors
def eval_(
    source: SourceArg = None,
    prompts: Annotated[int, typer.Option(help="Held-out prompts (a fixed set: the first N of seed 0).")] = 64,
    ops: Annotated[
        str | None, typer.Option(help="Comma-separated operating points, e.g. r1_d6,r4_d3 (default: all).")
    ] = None,
    steps: StepsOpt = None,
    cfg: Annotated[
        float | None, typer.Option("--cfg", help="Guidance scale (default: the scheduler's).", show_default=False)
    ] = None,
    seed: Annotated[int, typer.Option(help="Prompt i is sampled from noise seed SEED + i.")] = 0,
    threads: Annotated[int | None, typer.Option(help="CPU threads for a bundle's runtime.", show_default=False)] = None,
    schedule: Annotated[
        list[str] | None,
        typer.Option(
            "--schedule",
            help="Also score a step schedule (r4_d3:0.3,r1_d6:0.7, or a name in the bundle's manifest); "
            "repeatable. With --schedule and no --ops, only the schedules are scored.",
            show_default=False,
        ),
    ] = None,
    search_schedules: Annotated[
        bool,
        typer.Option(
            "--search-schedules",
            help="Score every point, then a family of two- and three-phase schedules of the points on their front "
            "(cheap-first and rich-first), and write the Pareto front (--out: pareto.json, pareto.png).",
        ),
    ] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="--search-schedules: write its files here.")] = None,
    family_points: Annotated[
        str | None,
        typer.Option(
            help="--search-schedules: the points to split (default: the single points' front).", show_default=False
        ),
    ] = None,
    shares: Annotated[
        str, typer.Option(help="--search-schedules: the cheap point's shares of the two-phase splits.")
    ] = "0.25,0.5,0.75",
    max_points: Annotated[int, typer.Option(help="--search-schedules: at most this many front points.")] = 4,
    metric: Annotated[
        str | None,
        typer.Option(
            help="--search-schedules: the score the front is drawn on (default: the strictest reported).",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(help="--search-schedules: a `profile --json` of the bundle: adds computed e2e ms and CPU ms."),
    ] = None,
    cost: Annotated[
        str, typer.Option(help="--search-schedules: the cost axis: gflops_per_image, e2e_ms or e2e_cpu_ms.")
    ] = "gflops_per_image",
    as_json: JsonOpt = False,
) -> None:
    """Demo scorer accuracy per operating point (and step schedule) on held-out prompts, with GFLOPs (the quality
    axis); --search-schedules builds the schedules' quality table and Pareto front."""
    from ..evaluation import evaluate_source

    names = [o.strip() for o in ops.split(",") if o.strip()] if ops else None
    if search_schedules:
        from ..generation import GenerationError
        from ..plan import load_results
        from ..schedule_search import search, write_outputs

        try:
            share_list = tuple(float(x) for x in shares.split(",") if x.strip())
        except ValueError:
            raise GenerationError(f"--shares must be numbers separated by commas, got {shares!r}") from None
        doc = search(
            source,
            prompts,
            steps,
            cfg,
            seed,
            threads,
            points=[p.strip() for p in family_points.split(",") if p.strip()] if family_points else None,
            shares=share_list,
            max_points=max_points,
            metric=metric,
            profile=load_results(profile) if profile else None,
            cost=cost,
        )
        written = write_outputs(doc, out_dir) if out_dir else []
        if as_json:
            print_json(doc)
        else:
            print_search(doc, written)
        return
    report = evaluate_source(source, prompts, names, steps, cfg, seed, threads, schedules=list(schedule or []))
    if as_json:
        print_json(report)
        return
    table = Table(
        title=f"{report['source']} ({report['kind']}): {report['prompts']} held-out prompts, "
        f"{report['steps']} steps, cfg {report['guidance']:g}"
    )
    rows = [*report["operating_points"], *report.get("schedules", [])]
    categories = list(rows[0]["per_category"]) if rows else []
    for col in ("point", "GFLOPs/step", "GFLOPs/image", "score", "+-", "strict", "+-", *categories):
        table.add_column(col, justify="left" if col == "point" else "right", no_wrap=True)
    for p in rows:
        table.add_row(
            escape(p["name"]),
            f"{p['gflops']:.3f}",
            f"{p['gflops_per_image']:.2f}",
            f"{p['score']:.3f}",
            f"{p['score_std']:.3f}",
            f"{p['strict_score']:.3f}",
            f"{p['strict_score_std']:.3f}",
            *(f"{p['per_category'].get(c, 0.0):.2f}" for c in categories),
        )
    out.print(table)
    out.print(
        "score: fraction of prompts the demo scorer passes under GenEval's rule (per category too); strict: also "
        "nothing in the image but the named objects; +-: binomial standard error over the prompts; "
        "GFLOPs/image: the steps actually run, CFG counted."
    )


def print_search(doc: dict, written: list[Path]) -> None:
    metric, second, cost = doc["metric"], doc["second_metric"], doc["cost_axis"]
    front = set(doc["front"])
    table = Table(
        title=f"{doc['source']}: {doc['prompts']} held-out prompts, {doc['steps']} steps, cfg {doc['guidance']:g}; "
        f"vs the full point {doc['full_point']} (paired over the prompts)"
    )
    cols = ["candidate", "order", cost, metric, "vs full +- 1 sigma"] + ([second] if second else []) + ["front"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("candidate", "order") else "right", no_wrap=True)
    for r in sorted(doc["candidates"], key=lambda r: r.get(cost) or 0.0):
        vs = r[f"{metric}_vs_full"]
        table.add_row(
            escape(r["name"]),
            r["ordering"],
            f"{r[cost]:.2f}" if r.get(cost) is not None else "-",
            f"{r[metric]:.3f}",
            f"{vs['diff']:+.3f} +- {vs['std']:.3f}",
            *([f"{r[second]:.3f}"] if second else []),
            "*" if r["name"] in front else "",
        )
    out.print(table)
    orderings = doc["orderings"].get(metric)
    if orderings:
        out.print(
            f"cheap-first minus rich-first ({len(doc['orderings']['pairs'])} mirror pairs, {metric}): mean "
            f"{orderings['mean_diff_cheap_minus_rich']:+.3f}; wins {orderings['cheap_first_wins']} cheap-first, "
            f"{orderings['rich_first_wins']} rich-first, {orderings['ties']} ties"
        )
    for path in written:
        out.print(f"wrote {path}")
