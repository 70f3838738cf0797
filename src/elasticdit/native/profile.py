"""`profile --device host --runner native`: each operating point's whole pipeline run by elasticdit-run, so the
end-to-end latency is measured (text encoder, every step, decode in one process) rather than summed from
per-method medians. Yields the same events as `profile.host.measure`, plus `e2e_measured_ms` per point.

Per point: one elasticdit-run process with `--runs R --warmup W` (the steps and guidance of the profile).
Load first/warm are that process' first load of the method and its reload after releasing the program. Peak
memory is the process' VmHWM with the text encoder, this point and the decoder loaded. No per-op breakdown
(ETDump is the Python host path's and executor_runner's job).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..generation import noise_for
from ..profile.hostinfo import host_info
from .generate import resolve_runner

PROFILE_PROMPT = "a red circle left of a blue square"
MEMORY_METHOD = (
    "peak resident set (VmHWM) of the elasticdit-run process holding the text encoder, this denoise method and "
    "the decoder, through warm-up and timed runs"
)
E2E_MEASURED = (
    "e2e measured: wall time of one whole generation in elasticdit-run (tokenize, encode_text for the prompt and "
    "the empty prompt, every step, decode, 8-bit conversion), no load, no file writing"
)


def _latent_shape(point: dict[str, Any]) -> list[int]:
    shape = list(next(s["shape"] for s in point["inputs"] if s["name"] == "latent"))
    return [1, *shape[1:]]


def timing_events(doc: dict[str, Any], manifest: dict[str, Any], point: dict[str, Any], with_aux: bool) -> list[dict]:
    """Profile events from one elasticdit-run timings document: the text encoder's and decoder's (`with_aux`, once
    per profile) and the point's, with its measured end-to-end times."""
    first = doc["load_ms"]["first"]["methods"]
    warm = (doc["load_ms"]["warm"] or {}).get("methods", {})
    events = []
    if with_aux:
        aux = (
            ("encode_text", "text_encoder", [r["encode_text_ms"][0] for r in doc["runs"] if r["encode_text_ms"]]),
            ("decode", "decoder", [r["decode_ms"] for r in doc["runs"]]),
        )
        for kind, key, ms in aux:
            entry = manifest.get(key)
            if entry and ms:
                load = {"first": first.get(entry["method"]), "warm": warm.get(entry["method"])}
                event = {"event": "method", "method": entry["method"], "kind": kind, "load_ms": load, "ms": ms}
                events.append({**event, "ops": None})
    mem = None
    if doc.get("peak_rss_mb") is not None:
        mem = {"peak_mb": doc["peak_rss_mb"], "process_peak_mb": doc["peak_rss_mb"], "method": MEMORY_METHOD}
    events.append(
        {
            "event": "point",
            "name": point["name"],
            "method": point["method"],
            "kind": "denoise",
            "load_ms": {"first": first.get(point["method"]), "warm": warm.get(point["method"])},
            "ms": [s["ms"] / s["calls"] for r in doc["runs"] for s in r["steps"] if s["calls"]],
            "ops": None,
            "memory": mem,
            "e2e_measured_ms": [r["e2e_ms"] for r in doc["runs"]],
            "notes": [
                E2E_MEASURED,
                "no per-op breakdown from elasticdit-run (ETDump: the Python host path or executor_runner)",
            ],
        }
    )
    return events


def measure(
    bundle: Path,
    manifest: dict[str, Any],
    points: list[dict[str, Any]],
    *,
    runs: int,
    warmup: int,
    threads: int | None,
    runner: str | Path = "native",
    steps: int | None = None,
    guidance: float | None = None,
    memory: bool = True,
) -> Iterator[dict[str, Any]]:
    native = resolve_runner(runner)
    yield {
        "event": "device",
        "device": dict(host_info(threads), backend="ExecuTorch (XNNPACK), elasticdit-run (C++ Module API)"),
    }
    for i, point in enumerate(points):
        yield {"event": "stage", "text": f"{point['name']}: elasticdit-run"}
        doc = native.generate(
            bundle,
            PROFILE_PROMPT,
            noise_for(0, _latent_shape(point)).numpy(),
            op=point["name"],
            steps=steps,
            guidance=guidance,
            runs=runs,
            warmup=warmup,
            threads=threads,
        )
        for event in timing_events(doc, manifest, point, with_aux=i == 0):
            if event["event"] == "point" and not memory:
                event["memory"] = None
            yield event
