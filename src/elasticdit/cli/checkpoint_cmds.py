"""`inspect` and `convert`: what a checkpoint holds, and importing one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .app import (
    CheckpointArg,
    JsonOpt,
    ResolutionOpt,
    app,
    default_checkpoint,
    out,
    print_json,
    reports_errors,
)


def _load_for_inspect(path: Path, resolution: tuple[int, int] | None):
    from ..checkpoint import load_checkpoint
    from ..config import ModelConfig
    from ..errors import ConfigParseError
    from ..model.pipeline import build_models

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
    recipe: Annotated[
        str | None,
        typer.Option(help="Count resident weight bytes as this recipe stores them (default: float32, unquantized)."),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="The target of --recipe (default: the packaged recipe's own).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Elastic space, parameters, per-operating-point tokens, GFLOPs, SSBA sparsity and memory."""
    from ..inspection import inspect_models
    from ..targets import get_target, target_recipe

    path = checkpoint or default_checkpoint()
    storage, limits = None, None
    if recipe:
        from ..exporter import phone_limits_report
        from ..recipes import packaged_recipes

        known = packaged_recipes()
        name = target or (known[recipe].parent.parent.name if recipe in known else None)
        if name is None:
            raise typer.BadParameter("--recipe PATH.toml needs --target")
        storage = get_target(name).weight_storage(target_recipe(recipe, name))
    models = _load_for_inspect(path, resolution)
    report = inspect_models(models, resolution, attention, storage)
    report["recipe"] = recipe
    if recipe:  # every point at this resolution, against the target's phone limits (chunked or refused)
        limits = phone_limits_report(name, recipe, models.cfg, tuple(report["resolution"]))
        report["phone_limits"] = limits
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
        "weights MB",
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
            f"{p['weight_bytes'] / 2**20:.1f}",
        )
    out.print(table)
    t = report["totals"]
    out.print(
        f"{t['operating_points']} operating points; full {t['gflops_full']:.3f} GFLOPs, lightest "
        f"{t['gflops_lightest']:.3f} GFLOPs ({t['elastic_range']:.1f}x range); FLOPs counted with "
        f"torch.utils.flop_counter on each static module ({report['operating_points'][0]['attention']} "
        "attention)."
    )
    if limits is not None:
        out.print(limits_line(limits))


def limits_line(limits: dict) -> str:
    if not limits["fits"]:
        return f"[red]phone limits:[/] {limits['error']}"
    if not limits["chunks"]:
        return "phone limits: every point fits in one package"
    pieces = "; ".join(
        f"{c['file']} blocks {c['blocks'][0]}-{c['blocks'][1] - 1}: weight file {c['weight_file_bytes'] / 2**20:.1f} "
        f"MiB, largest function {c['largest_function_bytes'] / 2**20:.1f} MiB"
        for c in limits["chunks"]
    )
    return f"phone limits: chunked into {len(limits['chunks'])} block-range packages ({pieces})"


@app.command()
@reports_errors
def convert(
    src: Annotated[
        Path,
        typer.Argument(
            help="A StableDiffusion3Pipeline.save_pretrained folder, or an SD3Transformer2DModel one (transformer)."
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="The v1 checkpoint to write (.safetensors).")],
    source_format: Annotated[str, typer.Option("--from", help="Source format.")] = "diffusers-sd3",
    depths: Annotated[
        list[str] | None,
        typer.Option("--depths", help="Extra depth plan NAME=BLOCKS, e.g. '12=0-5,18-23'; repeatable."),
    ] = None,
    text_len: Annotated[int, typer.Option(help="Joint text length the model will be fed (SD3: 77 + 256).")] = 333,
    t5: Annotated[str, typer.Option("--t5", help="keep: convert the T5 encoder; drop: zeros in its place.")] = "drop",
    decoder: Annotated[
        tuple[str, Path] | None,
        typer.Option("--decoder", help="'taesd3 DIR': an AutoencoderTiny folder as the decoder instead of the VAE's."),
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option("--lora", help="FILE.safetensors[:SCALE], a diffusers/PEFT LoRA to fuse in; repeatable."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Convert an SD3 / SD3.5 pipeline (or transformer) to a v1 checkpoint (ratio 1, SSBA off)."""
    from ..convert_sd3 import convert_sd3

    if source_format != "diffusers-sd3":
        raise typer.BadParameter(f"unknown source format '{source_format}'; known: diffusers-sd3")
    cfg = convert_sd3(src, output, depths or [], text_len, t5, decoder, lora or [])
    te = cfg.text_encoders
    summary = {
        "output": str(output),
        "blocks": cfg.transformer.num_blocks,
        "depths": {k: list(v) for k, v in cfg.elastic.depths.items()},
        "dual_attention_layers": list(cfg.transformer.dual_attention_layers),
        "vae": getattr(cfg.vae, "kind", None),
        "text_encoders": None if te is None else ["clip_l", "clip_g", *(["t5"] if te.t5 else [])],
        "loras": lora or [],
    }
    if as_json:
        print_json(summary)
    else:
        parts = ", ".join(f"{k} {v}" for k, v in (("vae", summary["vae"]), ("text", summary["text_encoders"])) if v)
        out.print(
            f"wrote {output}: {cfg.transformer.num_blocks} blocks, depth plans {', '.join(cfg.elastic.depths)}"
            + (f"; {parts}" if parts else "")
        )
