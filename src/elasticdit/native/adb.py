"""`profile --device adb --runner PATH/elasticdit-run`: each operating point's whole pipeline on the phone.

The adb transport (`profile/adb.py`) pushes the runner and the bundle as it does for executor_runner; with an
elasticdit-run binary (found by its embedded marker) it also pushes the initial noise (`noise.npy`, drawn as
`generate --seed 0` draws it) and runs, per point, `./elasticdit-run generate . --op NAME --runs R --warmup W
--json`, parsing the timings document it prints: measured end-to-end latency per point, per-stage and per-step
times, load first/warm, the process' peak memory. No per-op breakdown: pass executor_runner as --runner for that.
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
from ..profile.adb import Adb, AdbSession, _looks_like_adb_failure, classify, device_info
from .profile import PROFILE_PROMPT, _latent_shape, timing_events
from .run import parse_error, parse_timings

APP_RUNNER = "elasticdit-run"


class AppSession(AdbSession):
    runner_name = APP_RUNNER

    def command(self, point: str, noise: str, runs: int, warmup: int, steps, guidance) -> str:
        args = ["generate", ".", "--prompt", PROFILE_PROMPT, "--noise", noise, "--op", point, "--runs", str(runs)]
        args += ["--warmup", str(warmup), "--json"]
        if steps:
            args += ["--steps", str(steps)]
        if guidance is not None:
            args += ["--cfg", repr(float(guidance))]
        if self.threads:
            args += ["--threads", str(self.threads)]
        return f"cd {shlex.quote(self.workdir)} && ./{APP_RUNNER} " + " ".join(shlex.quote(a) for a in args)

    def run_point(self, point: dict[str, Any], noise: str, runs: int, warmup: int, steps, guidance) -> dict:
        done = self.adb.shell(self.command(point["name"], noise, runs, warmup, steps, guidance), check=False)
        if done.returncode != 0:
            err = parse_error(done.stderr, done.returncode)  # kind "Crash" when the runner printed no named error
            if err.kind == "Crash" and _looks_like_adb_failure(done.stdout + "\n" + done.stderr):
                raise classify(done.stdout + "\n" + done.stderr, self.adb.serial, True, f"adb shell {APP_RUNNER}")
            raise DeviceError(f"{APP_RUNNER} on the phone, {point['name']}: {err.kind}: {err.message}")
        return parse_timings(done.stdout)


def measure_app(
    adb: Adb,
    runner: Path,
    bundle: Path,
    manifest: dict[str, Any],
    points: list[dict[str, Any]],
    *,
    serial: str | None,
    runs: int,
    warmup: int,
    threads: int | None,
    timeout: float,
    memory: bool,
    steps: int | None,
    guidance: float | None,
) -> Iterator[dict[str, Any]]:
    dev = adb.select(serial)
    info = device_info(adb, dev, threads)
    info["backend"] = "ExecuTorch (XNNPACK), elasticdit-run (C++ Module API)"
    yield {"event": "device", "device": info}
    session = AppSession(adb, runner, threads, timeout)
    files = sorted(
        {p["file"] for p in points} | {e["file"] for e in (manifest.get("decoder"), manifest.get("text_encoder")) if e}
    )
    try:
        session.setup(bundle, [*files, "manifest.json"])
        noises: dict[tuple[int, ...], str] = {}
        for i, point in enumerate(points):
            shape = tuple(_latent_shape(point))
            if shape not in noises:
                noises[shape] = f"noise-{len(noises)}.npy"
                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(tmp) / noises[shape]
                    np.save(local, noise_for(0, list(shape)).numpy())
                    adb.run("push", str(local), f"{session.workdir}/{noises[shape]}")
            yield {"event": "stage", "text": f"{point['name']} on {dev.serial} ({APP_RUNNER})"}
            doc = session.run_point(point, noises[shape], runs, warmup, steps, guidance)
            for event in timing_events(doc, manifest, point, with_aux=i == 0):
                if event["event"] == "point" and not memory:
                    event["memory"] = None
                yield event
    finally:
        session.cleanup()
