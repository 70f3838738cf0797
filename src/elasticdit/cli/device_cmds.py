"""`profile`, `devices` and `plan`: measuring bundles on devices and choosing an operating point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .app import (
    JsonOpt,
    ResolutionChoiceOpt,
    app,
    err,
    out,
    print_json,
    reports_errors,
)


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
        Path | None,
        typer.Option(
            help="adb: ExecuTorch's executor_runner (per method, per-op breakdown) or elasticdit-run (whole pipelines "
            "timed end to end), built for Android arm64-v8a. host: 'native' (elasticdit-run, built on demand) or an "
            "elasticdit-run build."
        ),
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
    schedule: Annotated[
        list[str] | None,
        typer.Option(
            "--schedule",
            help="A step schedule to time end to end, computed from the per-point step latencies and measured by "
            "running whole generations (host, ssh): SPEC (r4_d3:0.3,r1_d6:0.7) or a schedule the manifest names "
            "(those are always included); repeatable.",
            show_default=False,
        ),
    ] = None,
    resolution: ResolutionChoiceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Latency per operating point (load, denoise iterations, decode, text, end to end), peak memory, per-op times;
    and per step schedule, end to end. At one of the bundle's resolutions (--resolution; the report says which)."""
    from ..profile import ProfileRequest, profile_bundle
    from .app import parse_resolution

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
            schedules=list(schedule or []),
            resolution=parse_resolution(resolution) if resolution else None,
        )
    )
    if as_json:
        print_json(report)
    else:
        s, dev = report["settings"], report["device"]
        h, w = report["resolution"]
        where = f"{report['bundle']} at {h}x{w} on {dev.get('name') or dev.get('kind')}"
        table = Table(title=f"{where} ({dev.get('backend', '')})")
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
                f"{p['e2e_ms']:.1f}"
                + (f" ({p['e2e_measured_ms']['median']:.1f} meas.)" if p.get("e2e_measured_ms") else ""),
                f"{p['peak_memory_mb']:.1f}" if p["peak_memory_mb"] is not None else "-",
                f"{escape(top['name'])} {top['share']:.0%}" if top else "-",
            )
        out.print(table)
        out.print(
            f"e2e = text + {s['steps']} steps x {s['denoise_calls_per_step']} denoise call(s) + decode (guidance "
            f"{s['guidance_scale']:g}, cfg_batch {str(s['cfg_batch']).lower()}); load = first / warm; {s['runs']} "
            f"runs after {s['warmup']} warm-up"
        )
        print_schedules(report)
        for note in [*s.get("notes", []), *s.get("schedule_notes", [])]:
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


def print_schedules(report: dict[str, Any]) -> None:
    rows = report.get("schedules") or []
    if not rows:
        return
    table = Table(title=f"Step schedules, {report['settings']['steps']} steps")
    cols = ("schedule", "steps per point", "GFLOPs/image", "e2e ms computed", "e2e ms measured min/med/p90", "peak MB")
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:2] else "right", no_wrap=True)

    def ms(v: float | None) -> str:
        return f"{v:.1f}" if v is not None else "-"

    for r in rows:
        m = r["measured_e2e_ms"]
        table.add_row(
            escape(r["name"]),
            " ".join(f"{p}x{n}" for p, n in r["steps_per_point"].items()),
            f"{r['gflops_per_image']:.2f}",
            ms(r["computed_e2e_ms"]),
            f"{m['min']:.1f} / {m['median']:.1f} / {m['p90']:.1f}" if m else "-",
            ms(r["peak_memory_mb"]),
        )
    out.print(table)


@app.command()
@reports_errors
def devices(as_json: JsonOpt = False) -> None:
    """Connected Android devices (adb), configured ssh hosts, and the known device profiles."""
    from ..devices_registry import configured_hosts, hosts_file, packaged_profiles
    from ..errors import DeviceError

    adb: dict[str, Any] = {"available": False, "devices": [], "error": None}
    try:
        from ..profile.adb import Adb

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
        typer.Option(
            help='Quality per operating point and step schedule: JSON {"operating_points": [{"name", "score"}], '
            '"schedules": [{"phases", "score"}]} (`eval --json`, or pareto.json from `eval --search-schedules`).'
        ),
    ] = None,
    resolution: Annotated[
        str | None,
        typer.Option(
            "--resolution",
            help="HEIGHTxWIDTH the plan is for: the profile must have been measured there (`profile --resolution`); "
            "default: the profile's.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The best operating point or step schedule whose end-to-end latency (and memory) fit the budget."""
    from ..plan import check_resolution, load_results, read_schedule_quality
    from ..plan import plan as make_plan
    from ..profile.report import read_quality
    from .app import parse_resolution

    results = load_results(profile_results)
    at = parse_resolution(resolution) if resolution else None
    if at is not None:
        check_resolution(results, at, profile_results)

    source = "--memory-mb" if memory_mb is not None else None
    if memory_mb is None and device:
        from ..devices_registry import find_profile

        prof = find_profile(device)
        memory_mb, source = float(prof.app_memory_mb), f"device profile {prof.name} ({prof.app_memory_basis})"
    result = make_plan(
        results,
        budget_ms,
        memory_mb,
        steps,
        read_quality(quality) if quality else None,
        source,
        read_schedule_quality(quality) if quality else None,
    )
    if at is not None:  # only when asked: a plan without --resolution prints what it printed before the option
        result["resolution"] = list(at)
    if as_json:
        print_json({k: v for k, v in result.items()})
        return
    c = result["choice"]
    memory = f", {c['peak_memory_mb']:.0f} MB" if c["peak_memory_mb"] is not None else ""
    rank = f"score {c['score']:g}" if result["ranked_by"] == "score" else f"{c['gflops']:.3f} GFLOPs/step"
    out.print(
        f"[bold]{escape(c['name'])}[/]{' at ' + resolution if at else ''}: {c['e2e_ms']:.1f} ms at {result['steps']} "
        f"steps{memory} ({rank}); budget "
        f"{budget_ms:g} ms" + (f", {memory_mb:g} MB" if memory_mb is not None else "")
    )
    weighed = result["weighed"]
    out.print(f"weighed {weighed['points']} operating points and {weighed['schedules']} step schedules")
    for r in result["candidates"]:
        extra = f", {r['peak_memory_mb']:.0f} MB" if r["peak_memory_mb"] is not None else ""
        score = f", score {r['score']:g}" if r["score"] is not None else ""
        out.print(f"  next: {escape(r['name'])} {r['e2e_ms']:.1f} ms{extra}{score}")
    for r in result["rejected"]:
        out.print(f"  {'too big' if r['e2e_ms'] is not None else 'left out'}: {escape(r['name'])} ({r['reason']})")
    if result["unmeasured"]:
        out.print(f"note: the profile is incomplete; not measured: {', '.join(result['unmeasured'])}")
