"""A step schedule measured by running it: whole generations through the bundle's methods, as an app runs them.

Each run is what `generate` does on this host (`generation.BundleSource`, the same sampler and step rule): the
prompt through `encode_text` (its embedding is not reused between runs; the unconditional one is, as the e2e
rule assumes an app caches it), `steps` denoise steps each calling the method of the point the schedule gives
that step (twice per step under classifier-free guidance unless the bundle is batched for it), then `decode`.
At `resolution` (None: the bundle's default), each point's method there. Wall time and process CPU time (all
threads) per run, after `warmup` untimed runs that also load every method.
Peak memory: a fresh child (`memory.py`) that loads the text encoder, the decoder and every point of the
schedule, the methods an app holds to run it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

PROMPT = "a red circle left of a blue square"


def measure_schedule(
    bundle: Path,
    manifest: Any,
    schedule: Any,
    steps: int,
    guidance: float | None,
    runs: int,
    warmup: int,
    threads: int | None,
    memory: bool = True,
    python: str | None = None,
    resolution: tuple[int, int] | None = None,
) -> dict[str, Any]:
    from ..generation import BundleSource
    from .memory import measure_peak_memory

    source = BundleSource(bundle, threads, resolution)
    prompt = PROMPT if manifest.text_encoder is not None else ""
    scale = source.guidance if guidance is None else guidance
    for _ in range(max(1, warmup)):
        source.generate(prompt, schedule, steps, scale, seed=0)
    wall, cpu = [], []
    for i in range(runs):
        source.forget_prompts()
        c0, t0 = time.process_time(), time.perf_counter()
        source.generate(prompt, schedule, steps, scale, seed=i)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    mem = None
    if memory:
        aux = [e.method for e in (manifest.text_encoder, manifest.decoder_at(resolution)) if e is not None]
        methods = aux + [manifest.point(p, resolution or manifest.resolution).method for p in schedule.points]
        mem = measure_peak_memory(bundle, methods, threads, python=python)
    return {
        "event": "schedule",
        "name": schedule.label,
        "phases": schedule.to_manifest(),
        "steps": steps,
        "guidance_scale": scale,
        "ms": wall,
        "cpu_ms": cpu,
        "memory": mem,
    }
