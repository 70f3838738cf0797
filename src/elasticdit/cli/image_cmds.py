"""`generate` and `eval`: images from a bundle or a checkpoint, and the demo scorer's accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
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
    as_json: JsonOpt = False,
) -> None:
    """Text to image on this host: a bundle through its methods, or a checkpoint through the PyTorch reference."""
    from ..generation import GenerationError, generate_image, open_source
    from ..progress import reporter
    from .app import parse_resolution

    if runner == "python":
        src = open_source(source, threads, parse_resolution(resolution) if resolution else None)
    else:
        from ..native_generation import AppRunnerSource

        if resolution:
            raise GenerationError("--resolution with --runner native: elasticdit-run runs the default resolution")
        src = AppRunnerSource(source, runner, threads)
    total, _ = src.settings(steps, cfg)
    with reporter(total) as report:
        report.stage(f"denoising ({src.kind}{'' if runner == 'python' else ', elasticdit-run'})")
        summary = generate_image(
            src, prompt, output, op, steps, cfg, seed, on_step=lambda i, s: report.advance(), noise=noise
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
    out.print(
        f"wrote {summary['output']}: {summary['prompt']!r} at {summary['operating_point']} "
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
    as_json: JsonOpt = False,
) -> None:
    """Demo scorer accuracy per operating point on held-out prompts, with GFLOPs (the quality axis)."""
    from ..evaluation import evaluate_source

    names = [o.strip() for o in ops.split(",") if o.strip()] if ops else None
    report = evaluate_source(source, prompts, names, steps, cfg, seed, threads)
    if as_json:
        print_json(report)
        return
    table = Table(
        title=f"{report['source']} ({report['kind']}): {report['prompts']} held-out prompts, "
        f"{report['steps']} steps, cfg {report['guidance']:g}"
    )
    categories = list(report["operating_points"][0]["per_category"]) if report["operating_points"] else []
    for col in ("point", "GFLOPs/step", "score", "+-", "strict", "+-", *categories):
        table.add_column(col, justify="left" if col == "point" else "right", no_wrap=True)
    for p in report["operating_points"]:
        table.add_row(
            p["name"],
            f"{p['gflops']:.3f}",
            f"{p['score']:.3f}",
            f"{p['score_std']:.3f}",
            f"{p['strict_score']:.3f}",
            f"{p['strict_score_std']:.3f}",
            *(f"{p['per_category'].get(c, 0.0):.2f}" for c in categories),
        )
    out.print(table)
    out.print(
        "score: fraction of prompts the demo scorer passes under GenEval's rule (per category too); strict: also "
        "nothing in the image but the named objects; +-: binomial standard error over the prompts."
    )
