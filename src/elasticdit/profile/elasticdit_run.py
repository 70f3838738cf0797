"""`profile --runner`: each operating point's whole pipeline run by elasticdit-run (the app-side runner of
ExecuTorch bundles, docs/runtime.md), so the end-to-end latency is measured in one process (tokenize, encode_text
for the prompt and the empty prompt, every step, decode) rather than summed from per-method medians.

- `--device host --runner native|PATH`: the bundle's target hands out the runner (`Target.app_runner`); one
  `elasticdit-run generate --op NAME --runs R --warmup W --json` process per point.
- `--device adb --runner PATH/elasticdit-run` (an arm64 build, told from executor_runner by its marker): the
  runner, every file of the bundle and its manifest, and the initial noise (`noise-K.npy`, drawn as `generate
  --seed 0` draws it) are pushed to the phone and each point runs there the same way; the timings document it
  prints is parsed.

`--resolution HxW` (one of the bundle's) is passed to the runner, which then runs that resolution's methods
(`denoise_<point>_<H>x<W>`, `decode_<H>x<W>`); the report names them.

A step schedule (`--schedule`, and the manifest's named ones) runs the same way, one `elasticdit-run generate
--schedule NAME|SPEC` process each (the manifest's name, else the exact spec: `native_generation.runner_schedule`),
so its end-to-end latency is measured on the device too, not only computed from the points' step medians.

Both yield the events `profile.host.measure` yields, plus `e2e_measured_ms` per point. Load first/warm are that
process' first load of the method and its reload after releasing the program; peak memory is the process' VmHWM
with the text encoder, the point and the decoder loaded. No per-op breakdown (ETDump: the Python host path or
executor_runner).
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeviceError
from ..generation import noise_for
from ..hostinfo import host_info
from ..native.run import parse_error, parse_timings
from ..targets import get_target
from .adb import Adb, AdbSession, _looks_like_adb_failure, classify, device_info
from .executor_runner import check_runner

APP_RUNNER = "elasticdit-run"
PROFILE_PROMPT = "a red circle left of a blue square"
BACKEND = "ExecuTorch (XNNPACK), elasticdit-run (C++ Module API)"
MEMORY_METHOD = (
    "peak resident set (VmHWM) of the elasticdit-run process holding the text encoder, this denoise method and "
    "the decoder, through warm-up and timed runs"
)
E2E_MEASURED = (
    "e2e measured: wall time of one whole generation in elasticdit-run (tokenize, encode_text for the prompt and "
    "the empty prompt, every step, decode, 8-bit conversion), no load, no file writing"
)
SCHEDULE_MEMORY = (
    "peak resident set (VmHWM) of the elasticdit-run process holding the text encoder, every denoise method of the "
    "schedule and the decoder, through warm-up and timed runs"
)
Resolution = tuple[int, int] | None  # one of the bundle's (None: its default)


def resolution_arg(resolution: Resolution) -> list[str]:
    """elasticdit-run's `--resolution HxW`, or nothing for the bundle's default."""
    return [] if resolution is None else ["--resolution", f"{resolution[0]}x{resolution[1]}"]


NO_OPS = "no per-op breakdown from elasticdit-run (ETDump: the Python host path or executor_runner)"


def latent_shape(point: Any) -> list[int]:
    return [1, *point.input("latent").shape[1:]]


def timing_events(
    doc: dict[str, Any], manifest: Any, point: Any, with_aux: bool, memory: bool, resolution: Resolution = None
) -> list[dict]:
    """Profile events from one timings document: the text encoder's and decoder's (`with_aux`, once per profile;
    the decoder of `resolution`) and the point's, with its measured end-to-end times."""
    first = doc["load_ms"]["first"]["methods"]
    warm = (doc["load_ms"]["warm"] or {}).get("methods", {})
    events = []
    if with_aux:
        aux = (
            (manifest.text_encoder, [r["encode_text_ms"][0] for r in doc["runs"] if r["encode_text_ms"]]),
            (manifest.decoder_at(resolution), [r["decode_ms"] for r in doc["runs"]]),
        )
        for entry, ms in aux:
            if entry is not None and ms:
                load = {"first": first.get(entry.method), "warm": warm.get(entry.method)}
                events.append(
                    {"event": "method", "method": entry.method, "kind": str(entry.kind), "load_ms": load, "ms": ms}
                    | {"ops": None}
                )
    mem = None
    if memory and doc.get("peak_rss_mb") is not None:
        mem = {"peak_mb": doc["peak_rss_mb"], "process_peak_mb": doc["peak_rss_mb"], "method": MEMORY_METHOD}
    events.append(
        {
            "event": "point",
            "name": point.name,
            "method": point.method,
            "kind": str(point.kind),
            "load_ms": {"first": first.get(point.method), "warm": warm.get(point.method)},
            "ms": [s["ms"] / s["calls"] for r in doc["runs"] for s in r["steps"] if s["calls"]],
            "ops": None,
            "memory": mem,
            "e2e_measured_ms": [r["e2e_ms"] for r in doc["runs"]],
            "notes": [E2E_MEASURED, NO_OPS],
        }
    )
    return events


def schedule_event(doc: dict[str, Any], schedule: Any, memory: bool) -> dict[str, Any]:
    """The event `profile.schedule_run.measure_schedule` yields, from the timings document of a scheduled run."""
    mem = None
    if memory and doc.get("peak_rss_mb") is not None:
        methods = list(doc["load_ms"]["first"]["methods"])
        mem = {"peak_mb": doc["peak_rss_mb"], "process_peak_mb": doc["peak_rss_mb"], "methods": methods}
        mem["method"] = SCHEDULE_MEMORY
    return {
        "event": "schedule",
        "name": schedule.label,
        "phases": schedule.to_manifest(),
        "steps": doc["steps"],
        "guidance_scale": doc["guidance"],
        "ms": [r["e2e_ms"] for r in doc["runs"]],
        "cpu_ms": None,  # elasticdit-run reports wall time only
        "memory": mem,
    }


def measure_host(
    bundle: Path,
    manifest: Any,
    points: list[Any],
    *,
    runner: str | Path,
    runs: int,
    warmup: int,
    threads: int | None,
    steps: int | None = None,
    guidance: float | None = None,
    memory: bool = True,
    schedules: list[Any] | None = None,
    resolution: Resolution = None,
) -> Iterator[dict[str, Any]]:
    from ..native_generation import runner_schedule

    app = get_target(manifest.target).app_runner(bundle, runner)
    at = None if resolution is None else f"{resolution[0]}x{resolution[1]}"
    yield {"event": "device", "device": dict(host_info(threads), backend=BACKEND)}
    for i, point in enumerate(points):
        yield {"event": "stage", "text": f"{point.name}: {APP_RUNNER}"}
        doc = app.generate(
            bundle,
            PROFILE_PROMPT,
            noise_for(0, latent_shape(point)).numpy(),
            op=point.name,
            steps=steps,
            guidance=guidance,
            runs=runs,
            warmup=warmup,
            threads=threads,
            resolution=at,
        )
        yield from timing_events(doc, manifest, point, i == 0, memory, resolution)
    for schedule in schedules or []:
        yield {"event": "stage", "text": f"schedule {schedule.label}: {APP_RUNNER}"}
        doc = app.generate(
            bundle,
            PROFILE_PROMPT,
            noise_for(0, latent_shape(manifest.point(schedule.points[0], resolution))).numpy(),
            schedule=runner_schedule(schedule, manifest.schedules),
            steps=steps,
            guidance=guidance,
            runs=runs,
            warmup=warmup,
            threads=threads,
            resolution=at,
        )
        yield schedule_event(doc, schedule, memory)


class AppSession(AdbSession):
    """An adb session that pushes elasticdit-run and runs whole generations with it."""

    runner_name = APP_RUNNER

    def command(self, pick: list[str], noise: str, runs: int, warmup: int, steps, guidance) -> str:
        """`pick`: ["--op", POINT] or ["--schedule", NAME|SPEC], then the `--resolution` if any."""
        args = ["generate", ".", "--prompt", PROFILE_PROMPT, "--noise", noise, *pick, "--runs", str(runs)]
        args += ["--warmup", str(warmup), "--json"]
        if steps:
            args += ["--steps", str(steps)]
        if guidance is not None:
            args += ["--cfg", repr(float(guidance))]
        if self.threads:
            args += ["--threads", str(self.threads)]
        return f"cd {shlex.quote(self.workdir)} && ./{APP_RUNNER} " + " ".join(shlex.quote(a) for a in args)

    def run_point(self, pick: list[str], noise: str, runs: int, warmup: int, steps, guidance) -> dict:
        cmd = self.command(pick, noise, runs, warmup, steps, guidance)
        done = self.adb.shell(cmd, check=False, timeout=self.timeout)
        if done.returncode != 0:
            err = parse_error(done.stderr, done.returncode)  # kind "Crash" when the runner printed no named error
            if err.kind == "Crash" and _looks_like_adb_failure(done.stdout + "\n" + done.stderr):
                raise classify(done.stdout + "\n" + done.stderr, self.adb.serial, True, f"adb shell {APP_RUNNER}")
            raise DeviceError(f"{APP_RUNNER} on the phone, {pick[1]}: {err.kind}: {err.message}")
        return parse_timings(done.stdout)


def measure_adb(
    bundle: Path,
    manifest: Any,
    points: list[Any],
    *,
    serial: str | None,
    runner: Path,
    runs: int,
    warmup: int,
    threads: int | None,
    timeout: float = 600.0,
    memory: bool = True,
    steps: int | None = None,
    guidance: float | None = None,
    adb_exe: str | None = None,
    schedules: list[Any] | None = None,
    resolution: Resolution = None,
) -> Iterator[dict[str, Any]]:
    from ..native_generation import runner_schedule

    adb = Adb(adb_exe, timeout)
    runner = check_runner(runner)
    dev = adb.select(serial)
    yield {"event": "device", "device": dict(device_info(adb, dev, threads), backend=BACKEND)}
    session = AppSession(adb, runner, threads, timeout)
    at = resolution_arg(resolution)
    try:  # every listed file (the runner checks them all: programs, tokenizer files) and the manifest
        session.setup(bundle, [*sorted(f["path"] for f in manifest.files), "manifest.json"])
        noises: dict[tuple[int, ...], str] = {}

        def noise(point: Any) -> str:
            shape = tuple(latent_shape(point))
            if shape not in noises:
                noises[shape] = f"noise-{len(noises)}.npy"
                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(tmp) / noises[shape]
                    np.save(local, noise_for(0, list(shape)).numpy())
                    adb.run("push", str(local), f"{session.workdir}/{noises[shape]}")
            return noises[shape]

        for i, point in enumerate(points):
            file = noise(point)
            yield {"event": "stage", "text": f"{point.name} on {dev.serial} ({APP_RUNNER})"}
            doc = session.run_point(["--op", point.name, *at], file, runs, warmup, steps, guidance)
            yield from timing_events(doc, manifest, point, i == 0, memory, resolution)
        for schedule in schedules or []:
            file = noise(manifest.point(schedule.points[0], resolution))
            yield {"event": "stage", "text": f"schedule {schedule.label} on {dev.serial} ({APP_RUNNER})"}
            pick = ["--schedule", runner_schedule(schedule, manifest.schedules), *at]
            doc = session.run_point(pick, file, runs, warmup, steps, guidance)
            yield schedule_event(doc, schedule, memory)
    finally:
        session.cleanup()
