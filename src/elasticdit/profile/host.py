"""Measure a bundle in this process: ExecuTorch (Android bundles) or ONNX Runtime (ONNX bundles).

`measure(...)` yields one event per measured method, the same events the ssh remote runner prints as JSON
lines and the adb transport builds from `executor_runner`, so one report builder serves every transport.

Definitions (host):
- load, first: `load_program` + `load_method` (XNNPACK builds its runtime and packs the weights here) the
  first time this method is loaded in the process; warm: the same again after the first copy is released
  (file in the page cache, runtime initialised). ONNX: creating the bundle's sessions + the first run.
- iterations: wall time of `method.execute(inputs)` after `warmup` untimed runs, inputs prepared once.
- per-op breakdown: a second program loaded with ETDump on, run a few times (profiling is kept out of the
  timed runs; see benchmarks/profiler_overhead.py for what it costs).
- peak memory: see `memory.py` (a child process per operating point).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import BundleError
from ..slicing import example_inputs
from ..verify import specs
from .etdump import OPS_RUNS
from .hostinfo import host_info


def inputs_for(kind: str, entry: dict[str, Any], seed: int = 0) -> list[torch.Tensor]:
    return [t.contiguous() for t in example_inputs(kind, specs(entry["inputs"]), seed)]


class ExecuTorchHost:
    backend = "ExecuTorch (XNNPACK), Python runtime"
    delegate = "XNNPACK"

    def __init__(self, bundle: Path, manifest: dict[str, Any], threads: int | None):
        from ..quiet import native_stderr_captured

        t0 = time.perf_counter()
        with native_stderr_captured():  # the runtime logs cpuinfo and threadpool lines to fd 2
            from executorch.runtime import Runtime

            from ..runners.executorch_host import set_threads

            set_threads(threads)  # once, before anything is loaded (a loaded delegate keeps its pool)
            Runtime.get()
        self.runtime_start_ms = (time.perf_counter() - t0) * 1e3  # import + start, when this process does it first
        self.bundle = bundle

    def load(self, entry: dict[str, Any], etdump: bool = False):
        from ..runners.executorch_host import ExecuTorchProgram

        t0 = time.perf_counter()
        program = ExecuTorchProgram(self.bundle / entry["file"], None, etdump=etdump)
        method = program.load(entry["method"])
        return (program, method), (time.perf_counter() - t0) * 1e3

    @staticmethod
    def execute(handle, entry: dict[str, Any], inputs: list[torch.Tensor]) -> None:
        handle[1].execute(inputs)

    def ops(self, entry: dict[str, Any], inputs: list[torch.Tensor]) -> dict[str, Any]:
        from .etdump import ops_from_etdump

        handle, _ = self.load(entry, etdump=True)
        for _ in range(OPS_RUNS):
            handle[1].execute(inputs)
        with tempfile.TemporaryDirectory() as tmp:
            path = handle[0].write_etdump(Path(tmp) / f"{entry['method']}.etdp")
            return ops_from_etdump(path, self.delegate)


class OnnxHost:
    backend = "ONNX Runtime (CPU)"
    delegate = "ONNX Runtime"

    def __init__(self, bundle: Path, manifest: dict[str, Any], threads: int | None):
        try:
            from ..runners.onnx_host import OnnxBundle
        except ImportError as exc:
            raise BundleError(f"this elasticdit has no ONNX host runner ({exc})") from None
        self._cls = OnnxBundle
        self.bundle, self.manifest, self.threads = bundle, manifest, threads
        self.runtime_start_ms = 0.0

    def load(self, entry: dict[str, Any], etdump: bool = False):
        # Sessions may be created lazily, so a load is "ready to answer": construction + one run.
        t0 = time.perf_counter()
        runner = self._cls(self.bundle, self.manifest, self.threads)
        runner.run(entry["method"], inputs_for(_kind(entry, self.manifest), entry))
        return runner, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def execute(handle, entry: dict[str, Any], inputs: list[torch.Tensor]) -> None:
        handle.run(entry["method"], inputs)

    def ops(self, entry: dict[str, Any], inputs: list[torch.Tensor]) -> dict[str, Any] | None:
        return None  # ONNX Runtime has its own profiler; the per-op breakdown here comes from ETDump


def _kind(entry: dict[str, Any], manifest: dict[str, Any]) -> str:
    if manifest.get("decoder") and entry["method"] == manifest["decoder"]["method"]:
        return "decode"
    if manifest.get("text_encoder") and entry["method"] == manifest["text_encoder"]["method"]:
        return "encode_text"
    return "denoise"


def host_backend(bundle: Path, manifest: dict[str, Any], threads: int | None):
    if manifest["target"] == "android":
        return ExecuTorchHost(bundle, manifest, threads)
    if manifest["target"] == "onnx":
        return OnnxHost(bundle, manifest, threads)
    raise BundleError(
        f"{bundle} is an {manifest['target']} bundle; the host runs android (ExecuTorch) and onnx bundles "
        "(use --device ios on a Mac for Core ML bundles)"
    )


def measure_method(backend, entry: dict[str, Any], kind: str, runs: int, warmup: int, with_ops: bool) -> dict[str, Any]:
    inputs = inputs_for(kind, entry)
    handle, first = backend.load(entry)
    for _ in range(warmup):
        backend.execute(handle, entry, inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.execute(handle, entry, inputs)
        times.append((time.perf_counter() - t0) * 1e3)
    del handle
    handle, warm = backend.load(entry)
    del handle
    ops = backend.ops(entry, inputs) if with_ops else None
    return {"method": entry["method"], "kind": kind, "load_ms": {"first": first, "warm": warm}, "ms": times, "ops": ops}


def measure(
    bundle: Path,
    manifest: dict[str, Any],
    points: list[dict[str, Any]],
    *,
    runs: int,
    warmup: int,
    threads: int | None,
    memory: bool = True,
    with_ops: bool = True,
    python: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Events: device, then text encoder and decoder (once per bundle), then one per operating point."""
    from .memory import measure_peak_memory

    backend = host_backend(bundle, manifest, threads)
    yield {
        "event": "device",
        "device": dict(
            host_info(threads), backend=backend.backend, runtime_start_ms=round(backend.runtime_start_ms, 3)
        ),
    }
    aux = [("encode_text", manifest.get("text_encoder")), ("decode", manifest.get("decoder"))]
    for kind, entry in aux:
        if entry:
            yield {"event": "stage", "text": f"{entry['method']}: timing"}
            yield {"event": "method", **measure_method(backend, entry, kind, runs, warmup, with_ops)}
    for point in points:
        yield {"event": "stage", "text": f"{point['name']}: timing"}
        result = measure_method(backend, point, "denoise", runs, warmup, with_ops)
        mem = None
        if memory:
            yield {"event": "stage", "text": f"{point['name']}: peak memory"}
            methods = [e["method"] for _, e in aux if e] + [point["method"]]
            mem = measure_peak_memory(bundle, methods, threads, python=python)
        yield {"event": "point", "name": point["name"], **result, "memory": mem}
