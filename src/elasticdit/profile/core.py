"""`elasticdit profile`: pick the transport for --device, collect its measurements, build and write the report.

Devices: `host` (in process), `adb` / `adb:SERIAL` (a phone, executor_runner), `ssh://[USER@]HOST[:PORT]` or
the name of a host configured in hosts.toml (a Linux board), `ios` (Core ML on a Mac).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BundleError, DeviceError, OperatingPointError, ProfileError
from ..schedules import Schedule
from .errors import DeviceGoneError

DEVICE_FORMS = "host, adb, adb:SERIAL, ssh://[USER@]HOST[:PORT], ios, or a host named in hosts.toml"


@dataclass
class ProfileRequest:
    bundle: Path
    device: str = "host"
    ops: list[str] | None = None
    runs: int = 10
    warmup: int = 2
    threads: int | None = None
    steps: int | None = None
    guidance: float | None = None
    out: Path | None = None
    quality: Path | None = None
    runner: Path | None = None  # adb: the arm64 executor_runner or elasticdit-run; host: "native" or elasticdit-run
    identity: Path | None = None  # ssh
    known_hosts: Path | None = None  # ssh
    remote_python: str | None = None  # ssh
    ssh_options: list[str] = field(default_factory=list)
    timeout: float = 600.0
    memory: bool = True
    op_breakdown: bool = True
    progress: bool | None = None
    schedules: list[str] = field(default_factory=list)  # specs or manifest names; the manifest's are always added
    resolution: tuple[int, int] | None = None  # one of the bundle's resolutions (None: its default)


@dataclass
class DeviceSpec:
    kind: str  # host | adb | ssh | ios
    serial: str | None = None
    target: Any = None  # SshTarget
    host: Any = None  # SshHost from hosts.toml


def parse_device(spec: str) -> DeviceSpec:
    spec = spec.strip()
    if spec == "host":
        return DeviceSpec("host")
    if spec == "ios":
        return DeviceSpec("ios")
    if spec == "adb" or spec.startswith("adb:"):
        serial = spec[4:] or None
        return DeviceSpec("adb", serial=serial)
    if spec.startswith("ssh://"):
        from .ssh import parse_ssh_url

        return DeviceSpec("ssh", target=parse_ssh_url(spec))
    from ..devices_registry import configured_hosts, hosts_file

    for host in configured_hosts():
        if host.name == spec:
            from .ssh import parse_ssh_url

            return DeviceSpec("ssh", target=parse_ssh_url(host.url), host=host)
    raise DeviceError(f"unknown device '{spec}': use {DEVICE_FORMS} (hosts file: {hosts_file()})")


def method_entries(manifest: Any, names: list[str] | None, resolution: tuple[int, int] | None = None) -> list[Any]:
    """The operating points to measure at `resolution` (None: the bundle's default; one it lacks is a named
    `BundleError` listing its resolutions): those `names` names, in that order and each once (the report lists --ops
    first, then the points a schedule adds: tests/test_schedules.py); every point in manifest order when `names` is
    None or empty."""
    points = manifest.points_at(resolution)
    if not names:
        return list(points)
    known = {p.name: p for p in points}
    unknown = [n for n in names if n not in known]
    if unknown:
        at = f" at {resolution[0]}x{resolution[1]}" if resolution is not None else ""
        raise OperatingPointError(
            f"the bundle has no operating point {', '.join(unknown)}{at}; it has {', '.join(known)}"
        )
    return [known[n] for n in dict.fromkeys(names)]


def resolution_for(req: ProfileRequest, manifest: Any) -> tuple[int, int] | None:
    """`--resolution`, checked against the bundle's (a named `BundleError` listing them); None for its default, so
    a one-resolution bundle's profile is what it was before the option existed."""
    if req.resolution is None:
        return None
    manifest.points_at(req.resolution)  # the bundle's resolutions, or the named error
    return None if tuple(req.resolution) == tuple(manifest.resolution) else tuple(req.resolution)  # type: ignore


def _validate(req: ProfileRequest) -> None:
    if req.runs < 1:
        raise ProfileError("--runs must be at least 1")
    if req.warmup < 0:
        raise ProfileError("--warmup cannot be negative")
    if req.threads is not None and req.threads < 1:
        raise ProfileError("--threads must be at least 1")
    if req.steps is not None and req.steps < 1:
        raise ProfileError("--steps must be at least 1")
    if req.timeout <= 0:
        raise ProfileError("--timeout must be positive")


def app_runner(req: ProfileRequest, spec: DeviceSpec) -> bool:
    """Whether `--runner` asks for the app-side runner: any runner on the host ("native" or a build), an
    elasticdit-run build (told by its marker) over adb; executor_runner keeps the per-method path."""
    if req.runner is None or spec.kind not in ("host", "adb"):
        return False
    if spec.kind == "host":
        return True
    from ..native.run import is_elasticdit_run

    path = Path(req.runner).expanduser()
    return path.is_file() and is_elasticdit_run(path)


def schedules_for(req: ProfileRequest, manifest: Any, resolution: tuple[int, int] | None = None) -> list[Schedule]:
    """The manifest's named schedules, then those asked for (a spec or a manifest name), checked at `resolution`
    (None: the default); one-point schedules are the points themselves and are left out."""
    from ..schedules import check, resolve

    held = manifest.point_resolutions()
    wanted = [
        *manifest.schedules.values(),
        *(resolve(t, manifest.default_operating_point, manifest.schedules) for t in req.schedules),
    ]
    out: dict[tuple, Schedule] = {}
    for schedule in wanted:
        check(schedule, held, tuple(resolution or manifest.resolution), where=str(req.bundle))
        if schedule.single is None:
            out.setdefault(tuple(schedule.phases), schedule)
    return list(out.values())


def measured_schedules(req: ProfileRequest, spec: DeviceSpec) -> str | None:
    """Why a transport cannot run a schedule as a whole (None: it can; elasticdit-run runs whole generations)."""
    if spec.kind == "adb" and not app_runner(req, spec):
        return (
            "adb: executor_runner runs one method per process start, so a whole generation cannot be timed with it; "
            "a schedule's latency over adb is computed from the per-point step latencies only (`--runner` an "
            "elasticdit-run build measures it on the phone)"
        )
    if spec.kind == "ios":
        return "ios: whole generations run through the bundle's host runner, which Core ML bundles lack; computed only"
    return None


def events_for(
    req: ProfileRequest,
    spec: DeviceSpec,
    manifest: Any,
    points: list[Any],
    schedules: list[Schedule] | None = None,
    resolution: tuple[int, int] | None = None,
) -> Iterator[dict]:
    common: dict[str, Any] = {"runs": req.runs, "warmup": req.warmup, "threads": req.threads}
    if app_runner(req, spec):  # whole pipelines in elasticdit-run, timed end to end
        from . import elasticdit_run

        app = {"runner": req.runner, "steps": req.steps, "guidance": req.guidance, "memory": req.memory, **common}
        app.update(schedules=schedules or [], resolution=resolution)
        if spec.kind == "host":
            return elasticdit_run.measure_host(req.bundle, manifest, points, **app)
        return elasticdit_run.measure_adb(req.bundle, manifest, points, serial=spec.serial, timeout=req.timeout, **app)
    steps = req.steps or int(manifest.scheduler.get("steps", 1))
    timed = {"schedules": schedules or [], "steps": steps, "guidance": req.guidance}
    common["resolution"] = resolution  # the decoder measured beside the points is that resolution's
    if spec.kind in ("host", "ios"):  # in this process: the target's profile backend (Core ML on a Mac for ios)
        from .host import measure

        if spec.kind == "ios":
            return measure(req.bundle, manifest, points, memory=False, with_ops=False, **common)
        return measure(req.bundle, manifest, points, memory=req.memory, with_ops=req.op_breakdown, **common, **timed)
    if spec.kind == "adb":
        from .adb import measure

        return measure(
            req.bundle,
            manifest,
            points,
            serial=spec.serial,
            runner=req.runner,
            timeout=req.timeout,
            with_ops=req.op_breakdown,
            memory=req.memory,
            **common,
        )
    if spec.kind == "ssh":
        from .ssh import SshOptions, measure

        host = spec.host
        opts = SshOptions(
            identity=req.identity or (Path(host.identity) if host and host.identity else None),
            known_hosts=req.known_hosts or (Path(host.known_hosts) if host and host.known_hosts else None),
            python=req.remote_python or (host.python if host and host.python else "python3"),
            options=list(req.ssh_options),
            timeout=req.timeout,
        )
        return measure(
            req.bundle,
            manifest,
            points,
            target=spec.target,
            opts=opts,
            with_ops=req.op_breakdown,
            memory=req.memory,
            **common,
            **timed,
        )
    raise DeviceError(f"unknown device kind {spec.kind!r}")


def profile_bundle(req: ProfileRequest) -> dict[str, Any]:
    from ..bundle.reader import read_bundle
    from ..progress import reporter
    from ..targets import TARGETS
    from .report import build_report, read_quality, write_outputs
    from .stats import guidance_rule

    _validate(req)
    req.bundle = Path(req.bundle)
    spec = parse_device(req.device)
    if spec.kind == "ios":
        from ..targets.ios.profile import check_available

        check_available()
    bundle = Path(req.bundle)
    opened = read_bundle(bundle, check=False)
    manifest = opened.manifest
    if spec.kind not in opened.target.transports:
        runs = [t.name for t in TARGETS.values() if spec.kind in t.transports]
        raise BundleError(
            f"{bundle} is an {manifest.target} bundle; --device {spec.kind} runs {' and '.join(runs)} bundles"
        )
    opened.check_files()
    resolution = resolution_for(req, manifest)
    schedules = schedules_for(req, manifest, resolution)
    wanted = None
    if req.ops:  # the points a schedule runs are measured too: its computed latency needs them
        wanted = [*req.ops, *(p for s in schedules for p in s.points)]  # method_entries keeps each once
    points = method_entries(manifest, wanted, resolution)
    scores = read_quality(req.quality) if req.quality else None
    steps = req.steps or int(manifest.scheduler.get("steps", 1))
    settings = {
        "device": req.device,
        "runs": req.runs,
        "warmup": req.warmup,
        "threads": req.threads,
        "steps": steps,
        **guidance_rule(manifest.scheduler, manifest.cfg_batch, req.guidance),
        "operating_points": [p.name for p in points],
        **({"schedules": [s.label for s in schedules]} if schedules else {}),
        "load_definition": "first: load_program + load_method the first time in the process (on a phone: the "
        "first executor_runner start); warm: the same again with the file cached",
    }
    aux = sum(e is not None for e in (manifest.text_encoder, manifest.decoder_at(resolution)))
    device: dict[str, Any] = {"kind": spec.kind}
    events: list[dict[str, Any]] = []
    error = None
    why_not = measured_schedules(req, spec)
    if schedules and why_not:
        settings["schedule_notes"] = [why_not]
    timed = [] if why_not else schedules
    with reporter(len(points) + aux + len(timed), req.progress) as bar:
        bar.stage(f"connecting to {req.device}")
        try:
            for event in events_for(req, spec, manifest, points, timed, resolution):
                if event["event"] == "device":
                    device = event["device"]
                elif event["event"] == "stage":
                    bar.stage(event["text"])
                elif event["event"] in ("method", "point", "schedule"):
                    events.append(event)
                    bar.advance()
        except DeviceGoneError as exc:
            error = str(exc)
    notes = sorted({n for e in events for n in e.get("notes", [])})
    if notes:
        settings["notes"] = notes
    report = build_report(manifest, str(bundle), device, settings, events, scores, error, schedules, resolution)
    if req.out:
        write_outputs(report, Path(req.out), events)
    return report
