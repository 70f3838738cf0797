"""Measure a bundle in this process, through its target's profile backend (ExecuTorch for Android bundles, ONNX
Runtime for ONNX bundles on any host; Core ML for iOS bundles on a Mac).

`measure(...)` yields one event per measured method, the same events the ssh remote runner prints as JSON
lines and the adb transport builds from `executor_runner`, so one report builder serves every transport.

Definitions (host): load, first / warm and the per-op breakdown are the backend's (targets/*/profile.py);
iterations: wall time of one execution after `warmup` untimed runs, inputs prepared once; peak memory: see
`memory.py` (a child process per operating point).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..hostinfo import host_info
from ..specs import example_inputs
from ..targets import get_target


def inputs_for(entry: Any, seed: int = 0) -> list[torch.Tensor]:
    return [t.contiguous() for t in example_inputs(entry.inputs, seed)]


def host_backend(bundle: Path, manifest: Any, threads: int | None) -> Any:
    return get_target(manifest.target).profile_backend(bundle, manifest, threads)


def measure_method(backend: Any, entry: Any, runs: int, warmup: int, with_ops: bool) -> dict[str, Any]:
    inputs = inputs_for(entry)
    handle, first = backend.load(entry)
    for _ in range(warmup):
        backend.execute(handle, entry, inputs)
    times, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        backend.execute(handle, entry, inputs)
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    del handle
    handle, warm = backend.load(entry)
    del handle
    ops = backend.ops(entry, inputs) if with_ops else None
    return {
        "method": entry.method,
        "kind": str(entry.kind),
        "load_ms": {"first": first, "warm": warm},
        "ms": times,
        "cpu_ms": cpu,  # process CPU time (every thread's), steadier than wall time on a loaded machine
        "ops": ops,
    }


def measure(
    bundle: Path,
    manifest: Any,
    points: list[Any],
    *,
    runs: int,
    warmup: int,
    threads: int | None,
    memory: bool = True,
    with_ops: bool = True,
    python: str | None = None,
    schedules: list[Any] | None = None,
    steps: int = 1,
    guidance: float | None = None,
    resolution: tuple[int, int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Events: device, then text encoder and decoder (once per bundle; the decoder at `resolution`, that of
    `points`; None: the default), then one per operating point, then one per step schedule (whole generations of
    `steps` steps at `guidance` and `resolution`, `schedule_run.py`)."""
    from .memory import measure_peak_memory

    backend = host_backend(bundle, manifest, threads)
    yield {
        "event": "device",
        "device": dict(
            host_info(threads),
            kind=getattr(backend, "device_kind", "host"),
            backend=backend.backend,
            runtime_start_ms=round(backend.runtime_start_ms, 3),
        ),
    }
    aux = [e for e in (manifest.text_encoder, manifest.decoder_at(resolution)) if e is not None]
    for entry in aux:
        yield {"event": "stage", "text": f"{entry.method}: timing"}
        yield {"event": "method", **measure_method(backend, entry, runs, warmup, with_ops)}
    for point in points:
        yield {"event": "stage", "text": f"{point.name}: timing"}
        result = measure_method(backend, point, runs, warmup, with_ops)
        mem = None
        if memory:
            yield {"event": "stage", "text": f"{point.name}: peak memory"}
            methods = [e.method for e in aux] + [point.method]
            mem = measure_peak_memory(bundle, methods, threads, python=python)
        yield {"event": "point", "name": point.name, **result, "memory": mem}
    for schedule in schedules or []:
        from .schedule_run import measure_schedule

        yield {"event": "stage", "text": f"schedule {schedule.label}: {steps}-step generations"}
        yield measure_schedule(
            bundle, manifest, schedule, steps, guidance, runs, warmup, threads, memory, python, resolution
        )
