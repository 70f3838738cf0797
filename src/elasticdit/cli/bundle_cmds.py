"""`export` and `verify`: writing a bundle and checking it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .app import (
    CheckpointArg,
    JsonOpt,
    ResolutionsOpt,
    app,
    default_checkpoint,
    err,
    out,
    print_json,
    reports_errors,
)


@app.command()
@reports_errors
def export(
    checkpoint: CheckpointArg = None,
    target: Annotated[
        str, typer.Option(help="android (ExecuTorch/XNNPACK .pte), ios (Core ML .mlpackage) or onnx.")
    ] = "android",
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Bundle folder to write (default: ./bundle-TARGET).", show_default=False),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Recipe name (the packaged ones: src/elasticdit/targets/*/recipes/) or path to a .toml (default: "
            "android-fp32, ios-fp16, onnx-fp32)."
        ),
    ] = None,
    ops: Annotated[
        str | None, typer.Option(help="Comma-separated operating points, e.g. r1_d6,r4_d2 (default: all).")
    ] = None,
    resolution: ResolutionsOpt = None,
    cfg: Annotated[bool, typer.Option("--cfg", help="Batch 2 denoise methods for classifier-free guidance.")] = False,
    weights: Annotated[
        str,
        typer.Option(
            help="inline: weights inside the program; external (android): model.pte + model.ptd, the weights in "
            "their own file (ExecuTorch program-data separation)."
        ),
    ] = "inline",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle folder.")] = False,
    schedule: Annotated[
        list[str] | None,
        typer.Option(
            "--schedule",
            help="A named step schedule for apps, NAME=SPEC, e.g. fast=r4_d3:0.3,r1_d6:0.7 (a point per share of "
            "the steps; docs/design.md); repeatable.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a bundle: one artifact holding every operating point (weights stored once) + manifest.json."""
    from ..exporter import ExportRequest, export_bundle
    from .app import parse_resolution

    req = ExportRequest(
        checkpoint=checkpoint or default_checkpoint(),
        target=target,
        output=output or Path(f"bundle-{target}"),
        recipe=recipe,
        ops=[o.strip() for o in ops.split(",") if o.strip()] if ops else None,
        resolutions=[parse_resolution(r) for r in resolution] if resolution else None,
        cfg_batch=cfg,
        weights=weights,
        force=force,
        schedules=list(schedule or []),
    )
    summary = export_bundle(req)
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"{summary['bundle']} ({summary['target']}, {summary['recipe']})")
    for col in ("file", "bytes", "sha256"):
        table.add_column(col, justify="right" if col == "bytes" else "left", no_wrap=True)
    for f in summary["files"]:
        table.add_row(f["path"], f"{f['bytes']:,}", f["sha256"][:16])
    out.print(table)
    report = summary["backend_report"]
    names = ", ".join(p["name"] for p in summary["operating_points"])
    out.print(
        f"{len(summary['operating_points'])} operating points ({names}) + "
        f"{len(summary['methods']) - len(summary['operating_points'])} other methods, "
        f"{summary['bytes'] / 1e6:.2f} MB in all"
    )
    for name, spec in summary.get("schedules", {}).items():
        out.print(f"schedule {name}: {spec}")
    outside = {m: r.get("outside_ops") for m, r in report.items() if r and r.get("outside_ops")}
    if outside:
        for m, ops_out in outside.items():
            out.print(f"  {m}: outside the delegate: {', '.join(f'{k} x{v}' for k, v in ops_out.items())}")


@app.command()
@reports_errors
def verify(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `elasticdit export`.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="The checkpoint the bundle came from (default: the demo, when the bundle was made from it)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the host runtime.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every file's hash, then run every method on this host at several noise levels against a reference of
    its own numerics (the quantized model itself for quantized recipes), reporting the SNR against float32."""
    from ..verify import verify_bundle

    report = verify_bundle(bundle, checkpoint, threads)
    if as_json:
        print_json(report)
    else:
        table = Table(title=f"{report['bundle']} ({report['target']}, {report['recipe']})")
        for col in ("method", "reference", "rel err", "limit", "SNR vs fp32", "result", "note"):
            table.add_column(col, no_wrap=col not in ("note", "reference"))
        for m in report["methods"]:
            floor = f" (>= {m['min_snr_db']:.0f})" if m["min_snr_db"] is not None else ""
            result = "[green]pass[/]" if m["passed"] else "[red]FAIL[/]"
            snr = f"{m['snr_db']:.1f} dB{floor}"
            table.add_row(
                m["method"], m["reference"], f"{m['value']:.2e}", f"<= {m['limit']:.0e}", snr, result, m["note"]
            )
        out.print(f"{len(report['files'])} files match their sha256")
        for difference in report["recipe_differences"]:
            out.print(f"[yellow]the bundle's recipe differs from this tool's (its limits are used):[/] {difference}")
        out.print(table)
    if not report["passed"]:
        failed = [m["method"] for m in report["methods"] if not m["passed"]]
        err.print(f"[bold red]error:[/] {len(failed)} methods out of tolerance: {', '.join(failed)}", soft_wrap=True)
        raise typer.Exit(1)
