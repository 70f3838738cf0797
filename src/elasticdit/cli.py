"""The `elasticdit` command line. Each command is a thin shell over a module that does the work."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ElasticDiTError
from .quiet import silence_library_noise

app = typer.Typer(
    name="elasticdit",
    help="Take an ElasticDiT checkpoint to phones: inspect it, export ExecuTorch / Core ML / ONNX bundles with "
    "every operating point sharing one copy of the weights, verify them, profile them and plan.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide enough for tables when piped (a CI log); the terminal's width otherwise.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

CheckpointArg = Annotated[
    Path | None,
    typer.Argument(
        help="Checkpoint (.safetensors, or .pt/.bin read with weights_only) or a config .json; "
        "default: the demo checkpoint shipped in the package.",
        show_default=False,
    ),
]
ResolutionOpt = Annotated[
    tuple[int, int] | None,
    typer.Option(
        "--resolution", help="Output image HEIGHT WIDTH in pixels (default: the checkpoint's).", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Named errors become one line on stderr and exit code 1; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ElasticDiTError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return run


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def default_checkpoint() -> Path:
    from .demo_checkpoint import demo_checkpoint_path

    return demo_checkpoint_path()


def _load_for_inspect(path: Path, resolution: tuple[int, int] | None):
    from .checkpoint import load_checkpoint
    from .config import ModelConfig
    from .errors import ConfigParseError
    from .model.pipeline import build_models

    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigParseError(f"cannot read config {path}: {exc}") from None
        return build_models(ModelConfig.from_dict(raw), "meta")
    return load_checkpoint(path, resolution).models()


@app.command()
@reports_errors
def inspect(
    checkpoint: CheckpointArg = None,
    resolution: ResolutionOpt = None,
    attention: Annotated[
        str | None, typer.Option(help="Attention lowering to count FLOPs with (default: the Android export's).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Elastic space, parameters, per-operating-point tokens, GFLOPs, SSBA sparsity and memory."""
    from .inspection import inspect_models

    path = checkpoint or default_checkpoint()
    report = inspect_models(_load_for_inspect(path, resolution), resolution, attention)
    report["checkpoint"] = str(path)
    if as_json:
        print_json(report)
        return
    h, w = report["resolution"]
    out.print(
        f"[bold]{path.name}[/]  {h}x{w} px, latent {report['latent'][0]}x{report['latent'][1]}, "
        f"{report['totals']['parameters'] / 1e6:.2f} M parameters "
        f"({', '.join(f'{k} {v / 1e6:.2f} M' for k, v in report['parameters'].items())})"
    )
    table = Table(show_lines=False)
    for col in (
        "point",
        "ratio",
        "depth",
        "grid",
        "tokens",
        "text",
        "params M",
        "GFLOPs",
        "dense GF",
        "tile/win",
        "img sparse",
        "joint sparse",
        "act MB",
    ):
        table.add_column(col, justify="left" if col == "point" else "right", no_wrap=True)
    for p in report["operating_points"]:
        s = p["ssba"]
        table.add_row(
            p["name"],
            str(p["compression_ratio"]),
            p["depth"],
            f"{p['token_grid'][0]}x{p['token_grid'][1]}",
            str(p["tokens"]),
            str(p["text_tokens"]),
            f"{p['params'] / 1e6:.2f}",
            f"{p['gflops']:.3f}",
            f"{p['gflops_dense']:.3f}",
            f"{s['tile']}/{s['window']}" if s else "off",
            f"{s['image_sparsity']:.1%}" if s else "-",
            f"{s['joint_sparsity']:.1%}" if s else "-",
            f"{p['activation_mb']:.1f}",
        )
    out.print(table)
    t = report["totals"]
    out.print(
        f"{t['operating_points']} operating points; full {t['gflops_full']:.3f} GFLOPs, lightest "
        f"{t['gflops_lightest']:.3f} GFLOPs ({t['elastic_range']:.1f}x range); FLOPs counted with "
        f"torch.utils.flop_counter on each static module ({report['operating_points'][0]['attention']} "
        "attention)."
    )


@app.command()
@reports_errors
def convert(
    src: Annotated[Path, typer.Argument(help="A folder written by diffusers' SD3Transformer2DModel.save_pretrained.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The v1 checkpoint to write (.safetensors).")],
    source_format: Annotated[str, typer.Option("--from", help="Source format.")] = "diffusers-sd3",
    depths: Annotated[
        list[str] | None,
        typer.Option("--depths", help="Extra depth plan NAME=BLOCKS, e.g. '12=0-5,18-23'; repeatable."),
    ] = None,
    text_len: Annotated[int, typer.Option(help="Joint text length the model will be fed (SD3: 77 + 256).")] = 333,
    as_json: JsonOpt = False,
) -> None:
    """Convert SD3-family transformer weights to a v1 checkpoint (ratio 1, SSBA off, no VAE)."""
    from .convert_sd3 import convert_sd3

    if source_format != "diffusers-sd3":
        raise typer.BadParameter(f"unknown source format '{source_format}'; known: diffusers-sd3")
    cfg = convert_sd3(src, output, depths or [], text_len)
    summary = {
        "output": str(output),
        "blocks": cfg.transformer.num_blocks,
        "depths": {k: list(v) for k, v in cfg.elastic.depths.items()},
    }
    if as_json:
        print_json(summary)
    else:
        out.print(f"wrote {output}: {cfg.transformer.num_blocks} blocks, depth plans {', '.join(cfg.elastic.depths)}")


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
            help="Recipe name (see recipes/) or path to a .toml (default: android-fp32, ios-fp16, onnx-fp32)."
        ),
    ] = None,
    ops: Annotated[
        str | None, typer.Option(help="Comma-separated operating points, e.g. r1_d6,r4_d2 (default: all).")
    ] = None,
    resolution: ResolutionOpt = None,
    cfg: Annotated[bool, typer.Option("--cfg", help="Batch 2 denoise methods for classifier-free guidance.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle folder.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a bundle: one artifact holding every operating point (weights stored once) + manifest.json."""
    from .exporter import ExportRequest, export_bundle

    req = ExportRequest(
        checkpoint=checkpoint or default_checkpoint(),
        target=target,
        output=output or Path(f"bundle-{target}"),
        recipe=recipe,
        ops=[o.strip() for o in ops.split(",") if o.strip()] if ops else None,
        resolution=resolution,
        cfg_batch=cfg,
        force=force,
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
    """Check every file's hash, then run every method on this host against the PyTorch reference."""
    from .verify import verify_bundle

    report = verify_bundle(bundle, checkpoint, threads)
    if as_json:
        print_json(report)
    else:
        table = Table(title=f"{report['bundle']} ({report['target']}, {report['recipe']})")
        for col in ("method", "check", "value", "limit", "result", "note"):
            table.add_column(col, no_wrap=col != "note")
        for m in report["methods"]:
            value = f"{m['value']:.2e}" if m["metric"] == "rel_err" else f"{m['value']:.1f} dB"
            limit = f"<= {m['limit']:.0e}" if m["metric"] == "rel_err" else f">= {m['limit']:.0f} dB"
            result = "[green]pass[/]" if m["passed"] else "[red]FAIL[/]"
            table.add_row(m["method"], m["metric"], value, limit, result, m["note"])
        out.print(f"{len(report['files'])} files match their sha256")
        out.print(table)
    if not report["passed"]:
        failed = [m["method"] for m in report["methods"] if not m["passed"]]
        err.print(f"[bold red]error:[/] {len(failed)} methods out of tolerance: {', '.join(failed)}", soft_wrap=True)
        raise typer.Exit(1)


def main() -> None:
    silence_library_noise()
    app()


if __name__ == "__main__":
    main()
