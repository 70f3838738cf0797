"""The host profiler's backend for Android bundles: ExecuTorch's Python runtime, per-op times from ETDump.

load, first: `load_program` + `load_method` (XNNPACK builds its runtime and packs the weights here) the first
time a method is loaded in the process; warm: the same again after the first copy is released. The per-op
breakdown comes from a second program loaded with ETDump on, run a few times (profiling is kept out of the
timed runs; see benchmarks/profiler_overhead.py for what it costs).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .etdump import OPS_RUNS


class ExecuTorchHost:
    backend = "ExecuTorch (XNNPACK), Python runtime"
    delegate = "XNNPACK"

    def __init__(self, bundle: Path, threads: int | None, manifest: Any = None):
        from ...quiet import native_stderr_captured

        t0 = time.perf_counter()
        with native_stderr_captured():  # the runtime logs cpuinfo and threadpool lines to fd 2
            from executorch.runtime import Runtime

            from .runtime import set_threads

            set_threads(threads)  # once, before anything is loaded (a loaded delegate keeps its pool)
            Runtime.get()
        self.runtime_start_ms = (time.perf_counter() - t0) * 1e3  # import + start, when this process does it first
        from .runtime import require_runtime_ops

        # after the runtime's start: a first build of the kernels is not timed
        require_runtime_ops(manifest.runtime_ops if manifest is not None else ())
        self.bundle, self.manifest = bundle, manifest
        self._data: dict[str, Path | None] = {}  # weights files checked so far (checked once, outside the timing)

    def load(self, entry, etdump: bool = False) -> tuple[Any, float]:
        from .runtime import ExecuTorchProgram, checked_data_file

        if entry.method not in self._data:
            self._data[entry.method] = checked_data_file(self.bundle, self.manifest, entry)
        t0 = time.perf_counter()
        program = ExecuTorchProgram(self.bundle / entry.file, None, etdump=etdump, data_path=self._data[entry.method])
        method = program.load(entry.method)
        return (program, method), (time.perf_counter() - t0) * 1e3

    @staticmethod
    def execute(handle: Any, entry, inputs: list[torch.Tensor]) -> None:
        handle[1].execute(inputs)

    def ops(self, entry, inputs: list[torch.Tensor]) -> dict[str, Any]:
        from .etdump import ops_from_etdump

        handle, _ = self.load(entry, etdump=True)
        for _ in range(OPS_RUNS):
            handle[1].execute(inputs)
        with tempfile.TemporaryDirectory() as tmp:
            path = handle[0].write_etdump(Path(tmp) / f"{entry.method}.etdp")
            return ops_from_etdump(path, self.delegate)
