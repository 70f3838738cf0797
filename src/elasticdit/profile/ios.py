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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DeviceError

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
    backend = "Core ML (macOS, compute units ALL)"

    def __init__(self, bundle: Path):
        import coremltools as ct

        self.ct, self.bundle = ct, bundle

    def load(self, entry: dict[str, Any]):
        t0 = time.perf_counter()
        model = self.ct.models.MLModel(
            str(self.bundle / entry["file"]), function_name=entry["method"], compute_units=self.ct.ComputeUnit.ALL
        )
        return model, (time.perf_counter() - t0) * 1e3

    @staticmethod
    def feed(entry: dict[str, Any], kind: str) -> dict[str, Any]:
        from ..slicing import example_inputs
        from ..verify import specs

        tensors = example_inputs(kind, specs(entry["inputs"]), 0)
        return {spec["name"]: t.numpy() for spec, t in zip(entry["inputs"], tensors, strict=True)}


def measure(  # pragma: no cover - needs macOS
    bundle: Path,
    manifest: dict[str, Any],
    points: list[dict[str, Any]],
    *,
    runs: int,
    warmup: int,
) -> Iterator[dict[str, Any]]:
    check_available()
    from .hostinfo import host_info

    host = CoreMLHost(bundle)
    yield {"event": "device", "device": dict(host_info(None), kind="ios-coreml-on-mac", backend=host.backend)}

    def one(entry: dict[str, Any], kind: str) -> dict[str, Any]:
        feed = host.feed(entry, kind)
        model, first = host.load(entry)
        for _ in range(warmup):
            model.predict(feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model.predict(feed)
            times.append((time.perf_counter() - t0) * 1e3)
        del model
        _, warm = host.load(entry)
        return {
            "method": entry["method"],
            "kind": kind,
            "load_ms": {"first": first, "warm": warm},
            "ms": times,
            "ops": None,
        }

    for kind, key in (("encode_text", "text_encoder"), ("decode", "decoder")):
        if manifest.get(key):
            yield {"event": "method", **one(manifest[key], kind)}
    for point in points:
        yield {"event": "point", "name": point["name"], **one(point, "denoise"), "memory": None}
