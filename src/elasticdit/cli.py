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
    """Named errors and OS errors become one line on stderr and exit code 1; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ElasticDiTError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:  # disk full, permissions, a vanished file: a line, not a traceback
            text = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
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


@app.command()
@reports_errors
def profile(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `elasticdit export`.")],
    device: Annotated[
        str,
        typer.Option(
            "--device", "-d", help="host, adb, adb:SERIAL, ssh://[USER@]HOST[:PORT], ios, or a host from hosts.toml."
        ),
    ] = "host",
    ops: Annotated[str | None, typer.Option(help="Comma-separated operating points to measure (default: all).")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per method.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed runs before the timed ones.")] = 2,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (default: the runtime's choice).", show_default=False)
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Denoise steps for the end-to-end figure (default: the bundle's).")
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="Guidance scale the app uses (default: the bundle's); != 1 means CFG.", show_default=False),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write profile.json, profile.csv, ops.csv and PNG plots here.")
    ] = None,
    quality: Annotated[
        Path | None,
        typer.Option(help='Quality per operating point: JSON {"operating_points": [{"name", "score"}]}.'),
    ] = None,
    runner: Annotated[
        Path | None, typer.Option(help="adb: ExecuTorch's executor_runner built for Android arm64-v8a.")
    ] = None,
    identity: Annotated[Path | None, typer.Option(help="ssh: private key file.")] = None,
    known_hosts: Annotated[Path | None, typer.Option(help="ssh: known_hosts file (host key checked strictly).")] = None,
    remote_python: Annotated[
        str | None, typer.Option(help="ssh: the board's python with elasticdit installed (default: python3).")
    ] = None,
    ssh_option: Annotated[
        list[str] | None, typer.Option(help="ssh: extra `-o KEY=VALUE` for ssh and scp; repeatable.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds a device command may run (or stay silent) before it counts as hung.")
    ] = 600.0,
    memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Measure peak memory.")] = True,
    op_breakdown: Annotated[
        bool, typer.Option("--op-breakdown/--no-op-breakdown", help="Per-op breakdown from ETDump.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Latency per operating point (load, denoise iterations, decode, text, end to end), peak memory, per-op times."""
    from .profile import ProfileRequest, profile_bundle

    report = profile_bundle(
        ProfileRequest(
            bundle=bundle,
            device=device,
            ops=[o.strip() for o in ops.split(",") if o.strip()] if ops else None,
            runs=runs,
            warmup=warmup,
            threads=threads,
            steps=steps,
            guidance=guidance,
            out=out_dir,
            quality=quality,
            runner=runner,
            identity=identity,
            known_hosts=known_hosts,
            remote_python=remote_python,
            ssh_options=ssh_option or [],
            timeout=timeout,
            memory=memory,
            op_breakdown=op_breakdown,
        )
    )
    if as_json:
        print_json(report)
    else:
        s, dev = report["settings"], report["device"]
        table = Table(title=f"{report['bundle']} on {dev.get('name') or dev.get('kind')} ({dev.get('backend', '')})")
        cols = ("point", "GFLOPs", "load ms", "denoise ms min/med/p90", "decode ms", "text ms", "e2e ms", "peak MB")
        for col in (*cols, "top op"):
            table.add_column(col, justify="left" if col in ("point", "top op") else "right", no_wrap=col != "top op")
        for p in report["operating_points"]:
            d, load, top = p["denoise_ms"], p["load_ms"], (p["ops"] or [None])[0]
            table.add_row(
                p["name"],
                f"{p['gflops']:.3f}" if p["gflops"] is not None else "-",
                " / ".join(f"{v:.1f}" if v is not None else "-" for v in (load["first"], load["warm"])),
                f"{d['min']:.2f} / {d['median']:.2f} / {d['p90']:.2f}",
                f"{p['decode_ms']['median']:.2f}" if p["decode_ms"] else "-",
                f"{p['text_encoder_ms']['median']:.2f}" if p["text_encoder_ms"] else "-",
                f"{p['e2e_ms']:.1f}",
                f"{p['peak_memory_mb']:.1f}" if p["peak_memory_mb"] is not None else "-",
                f"{escape(top['name'])} {top['share']:.0%}" if top else "-",
            )
        out.print(table)
        out.print(
            f"e2e = text + {s['steps']} steps x {s['denoise_calls_per_step']} denoise call(s) + decode (guidance "
            f"{s['guidance_scale']:g}, cfg_batch {str(s['cfg_batch']).lower()}); load = first / warm; {s['runs']} "
            f"runs after {s['warmup']} warm-up"
        )
        for note in s.get("notes", []):
            out.print(f"note: {escape(note)}")
        if out_dir:
            out.print(f"wrote {out_dir}/profile.json, profile.csv, ops.csv, latency.png, tradeoff.png")
    if not report["complete"]:
        done = len(report["operating_points"])
        err.print(
            f"[bold red]error:[/] {escape(report['error'] or 'incomplete')} (measured {done} of "
            f"{done + len(report['missing'])} operating points; the report says complete: false)",
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command()
@reports_errors
def devices(as_json: JsonOpt = False) -> None:
    """Connected Android devices (adb), configured ssh hosts, and the known device profiles."""
    from .devices_registry import configured_hosts, hosts_file, packaged_profiles
    from .errors import DeviceError

    adb: dict[str, Any] = {"available": False, "devices": [], "error": None}
    try:
        from .profile.adb import Adb

        client = Adb(timeout=20)
        adb["available"] = True
        adb["devices"] = [{"serial": d.serial, "state": d.state, **d.props} for d in client.devices()]
    except DeviceError as exc:
        adb["error"] = str(exc)
    hosts = [{"name": h.name, "url": h.url, "python": h.python, "profile": h.profile} for h in configured_hosts()]
    profiles = [p.to_dict() for p in packaged_profiles().values()]
    doc = {"adb": adb, "ssh_hosts": hosts, "hosts_file": str(hosts_file()), "profiles": profiles}
    if as_json:
        print_json(doc)
        return
    if adb["error"]:
        out.print(f"adb: {escape(adb['error'])}")
    elif not adb["devices"]:
        out.print("adb: no device connected")
    else:
        for d in adb["devices"]:
            out.print(f"adb: {d['serial']} {d['state']} {d.get('model', '')}  (--device adb:{d['serial']})")
    if hosts:
        for h in hosts:
            out.print(f"ssh: {h['name']} {h['url']}  (--device {h['name']})")
    else:
        out.print(f"ssh: no hosts configured in {hosts_file()}")
    table = Table(title="Device profiles (devices/*.toml)")
    for col in ("name", "device", "SoC", "cores big+little", "RAM GB", "app MB", "threads", "backend", "via"):
        table.add_column(col, no_wrap=col not in ("device", "SoC"))
    for p in profiles:
        table.add_row(
            p["name"],
            p["display_name"],
            p["soc"],
            f"{p['cores']} ({p['big_cores']}+{p['little_cores']})",
            f"{p['ram_gb']:g}",
            str(p["app_memory_mb"]),
            str(p["recommended_threads"]),
            p["backend"],
            p["transport"],
        )
    out.print(table)


@app.command()
@reports_errors
def plan(
    profile_results: Annotated[
        Path, typer.Option("--profile", help="Results of `elasticdit profile --json` (or --out DIR/profile.json).")
    ],
    budget_ms: Annotated[float, typer.Option("--budget-ms", help="End-to-end latency budget in milliseconds.")],
    memory_mb: Annotated[
        float | None, typer.Option("--memory-mb", help="Memory budget (default: the --device profile's).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Denoise steps (default: those the profile used).")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Device profile whose app memory is the budget (e.g. pixel-8-pro).")
    ] = None,
    quality: Annotated[
        Path | None,
        typer.Option(help='Quality per operating point: JSON {"operating_points": [{"name", "score"}]}.'),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The best operating point whose end-to-end latency (and memory) fit the budget."""
    from .plan import load_results
    from .plan import plan as make_plan
    from .profile.report import read_quality

    source = "--memory-mb" if memory_mb is not None else None
    if memory_mb is None and device:
        from .devices_registry import find_profile

        prof = find_profile(device)
        memory_mb, source = float(prof.app_memory_mb), f"device profile {prof.name} ({prof.app_memory_basis})"
    result = make_plan(
        load_results(profile_results), budget_ms, memory_mb, steps, read_quality(quality) if quality else None, source
    )
    if as_json:
        print_json({k: v for k, v in result.items()})
        return
    c = result["choice"]
    memory = f", {c['peak_memory_mb']:.0f} MB" if c["peak_memory_mb"] is not None else ""
    rank = f"score {c['score']:g}" if result["ranked_by"] == "score" else f"{c['gflops']:.3f} GFLOPs/step"
    out.print(
        f"[bold]{c['name']}[/]: {c['e2e_ms']:.1f} ms at {result['steps']} steps{memory} ({rank}); budget "
        f"{budget_ms:g} ms" + (f", {memory_mb:g} MB" if memory_mb is not None else "")
    )
    for r in result["candidates"]:
        extra = f", {r['peak_memory_mb']:.0f} MB" if r["peak_memory_mb"] is not None else ""
        out.print(f"  next: {r['name']} {r['e2e_ms']:.1f} ms{extra}")
    for r in result["rejected"]:
        out.print(f"  too big: {r['name']} ({r['reason']})")
    if result["unmeasured"]:
        out.print(f"note: the profile is incomplete; not measured: {', '.join(result['unmeasured'])}")


SourceArg = Annotated[
    Path | None,
    typer.Argument(
        help="A bundle folder (android: ExecuTorch runtime; onnx: ONNX Runtime) or a checkpoint (PyTorch reference); "
        "default: the demo checkpoint.",
        show_default=False,
    ),
]
StepsOpt = Annotated[int | None, typer.Option(help="Denoise steps (default: the scheduler's).", show_default=False)]


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
    threads: Annotated[int | None, typer.Option(help="CPU threads for a bundle's runtime.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Text to image on this host: a bundle through its methods, or a checkpoint through the PyTorch reference."""
    from .generation import generate_image, open_source
    from .progress import reporter

    src = open_source(source, threads)
    total, _ = src.settings(steps, cfg)
    with reporter(total) as report:
        report.stage(f"denoising ({src.kind})")
        summary = generate_image(src, prompt, output, op, steps, cfg, seed, on_step=lambda i, s: report.advance())
    if as_json:
        print_json(summary)
        return
    out.print(
        f"wrote {summary['output']}: {summary['prompt']!r} at {summary['operating_point']} "
        f"({summary['gflops']:.3f} GFLOPs/step), {summary['steps']} steps, cfg {summary['guidance']:g}, "
        f"seed {summary['seed']} ({summary['kind']})",
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
    from .evaluation import evaluate_source

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
    for col in ("point", "GFLOPs/step", "score", "+-", *categories):
        table.add_column(col, justify="left" if col == "point" else "right", no_wrap=True)
    for p in report["operating_points"]:
        table.add_row(
            p["name"],
            f"{p['gflops']:.3f}",
            f"{p['score']:.3f}",
            f"{p['score_std']:.3f}",
            *(f"{p['per_category'].get(c, 0.0):.2f}" for c in categories),
        )
    out.print(table)
    out.print("score: fraction of prompts the demo scorer passes; +-: binomial standard error over the prompts.")


def main() -> None:
    silence_library_noise()
    app()


if __name__ == "__main__":
    main()
