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
        t0 = time.perf_counter()
        model = self.ct.models.MLModel(
            str(self.bundle / entry.file), function_name=entry.method, compute_units=self.ct.ComputeUnit.ALL
        )
        return model, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def execute(handle: Any, entry: Any, inputs: list[torch.Tensor]) -> None:
        handle.predict({spec.name: t.numpy() for spec, t in zip(entry.inputs, inputs, strict=True)})

    def ops(self, entry: Any, inputs: list[torch.Tensor]) -> dict[str, Any] | None:
        return None
