"""The host profiler's backend for ONNX bundles: ONNX Runtime (CPU). A load is "ready to answer": creating the
bundle's sessions + the first run (sessions are created lazily). No per-op breakdown (ETDump is ExecuTorch's)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...specs import example_inputs
from .runtime import OnnxRunner


class OnnxHost:
    backend = "ONNX Runtime (CPU)"
    delegate = "ONNX Runtime"

    def __init__(self, bundle: Path, manifest: Any, threads: int | None):
        self.bundle, self.manifest, self.threads = bundle, manifest, threads
        self.runtime_start_ms = 0.0

    def load(self, entry: Any, etdump: bool = False) -> tuple[Any, float]:
        t0 = time.perf_counter()
        runner = OnnxRunner(self.bundle, self.manifest, self.threads)
        runner.run(entry, list(example_inputs(entry.inputs)))
        return runner, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def execute(handle: Any, entry: Any, inputs: list[torch.Tensor]) -> None:
        handle.run(entry, inputs)

    def ops(self, entry: Any, inputs: list[torch.Tensor]) -> dict[str, Any] | None:
        return None
