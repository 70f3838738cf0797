"""`--device ios`: run an iOS bundle's Core ML model through Core ML on a Mac.

Core ML exists only on Apple platforms, so this path runs only on macOS (15+, for multifunction models) with
coremltools; it has never been run on the Linux machines this project is built on. What it measures is Core
ML on the Mac (compute units ALL: CPU, GPU, Neural Engine), a stand-in for an iPhone, not the phone: for the
phone itself, open the .mlpackage in Xcode (Core ML performance report) or profile the app in Instruments.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ...errors import DeviceError

NEEDS = (
    "--device ios runs the bundle through Core ML, which exists only on macOS/iOS: run `elasticdit profile "
    "BUNDLE --device ios` on a Mac (macOS 15+, `pip install elasticdit` brings coremltools), or open the "
    ".mlpackage in Xcode for its Core ML performance report on a connected iPhone"
)


def check_available() -> None:
    if sys.platform != "darwin":
        raise DeviceError(f"{NEEDS}; this machine runs {platform.system()}")
    try:
        import coremltools  # noqa: F401
    except ImportError:
        raise DeviceError(f"{NEEDS}; coremltools is not installed here") from None


class CoreMLHost:  # pragma: no cover - needs macOS
    """The profiler's backend for iOS bundles on a Mac: one Core ML model per function (compute units ALL)."""

    backend = "Core ML (macOS, compute units ALL)"
    device_kind = "ios-coreml-on-mac"
    runtime_start_ms = 0.0

    def __init__(self, bundle: Path):
        from .ct import coremltools

        self.ct, self.bundle = coremltools(), bundle

    def load(self, entry: Any, etdump: bool = False) -> tuple[Any, float]:
        """One Core ML model per function; a chunked point's pieces, each its own (file, function), in chain order."""
        t0 = time.perf_counter()
        pieces = entry.chunks if getattr(entry, "chunks", None) else [entry]
        models = {
            getattr(p, "function", None) or entry.method: self.ct.models.MLModel(
                str(self.bundle / p.file),
                function_name=getattr(p, "function", None) or entry.method,
                compute_units=self.ct.ComputeUnit.ALL,
            )
            for p in pieces
        }
        return models, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def execute(handle: Any, entry: Any, inputs: list[torch.Tensor]) -> None:
        from ...chunking import run_chain

        def call(piece: Any, values: list[torch.Tensor]) -> list[torch.Tensor]:
            feeds = {spec.name: t.numpy() for spec, t in zip(piece.inputs, values, strict=True)}
            result = handle[getattr(piece, "function", None) or entry.method].predict(feeds)
            return [torch.from_numpy(result[s.name]) for s in piece.outputs]

        if getattr(entry, "chunks", None):  # untested here: Core ML runs only on macOS
            run_chain(entry, inputs, call)
        else:
            call(entry, inputs)

    def ops(self, entry: Any, inputs: list[torch.Tensor]) -> dict[str, Any] | None:
        return None
