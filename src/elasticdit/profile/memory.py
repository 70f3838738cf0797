"""Peak memory of one generation at an operating point, measured in a fresh child process.

Method (Linux): the child imports the runtime, resets the kernel's resident-set high-water mark
(`echo 5 > /proc/self/clear_refs`), notes VmRSS, then loads the text encoder, the operating point's denoise
method and the decoder from the bundle, runs each once, and reads VmHWM. `peak_mb` = VmHWM - that
baseline: the resident memory the model adds to a process (weights as packed by XNNPACK, the memory-planned
arena, the touched pages of the mmapped .pte). A fresh process per point keeps other points' packed
weights out of the figure. Elsewhere (macOS) it falls back to `ru_maxrss` deltas, which can under-read
when the import itself peaked higher.

    python -m elasticdit.profile.memory BUNDLE METHOD [METHOD ...] [--threads T]   -> one JSON line
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import ProfileError

METHOD = (
    "VmHWM - VmRSS baseline (kB from /proc/self/status, high-water reset via /proc/self/clear_refs) of a "
    "fresh child process that loads and runs text encoder + denoise + decode once"
)


def _status_kb(key: str) -> int | None:
    try:
        found = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _maxrss_kb() -> int:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, kB on Linux


def _reset_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(bundle: Path, methods: list[str], threads: int | None) -> dict[str, Any]:
    from ..bundle.reader import read_bundle
    from ..quiet import silence_library_noise
    from ..specs import example_inputs

    silence_library_noise()
    opened = read_bundle(bundle, check=False)  # the parent checked the files before starting this child
    backend = opened.target.profile_backend(bundle, opened.manifest, threads)
    entries = {m: opened.manifest.method(m) for m in methods}
    inputs = {m: [t.contiguous() for t in example_inputs(entries[m].inputs)] for m in methods}
    exact = _reset_high_water() and _status_kb("VmRSS") is not None
    base = _status_kb("VmRSS") if exact else _maxrss_kb()
    handles = []
    for m in methods:
        handle, _ = backend.load(entries[m])
        backend.execute(handle, entries[m], inputs[m])
        handles.append(handle)
    peak = _status_kb("VmHWM") if exact else _maxrss_kb()
    return {
        "peak_mb": round((peak - base) / 1024, 2),
        "process_peak_mb": round(peak / 1024, 2),
        "baseline_mb": round(base / 1024, 2),
        "methods": methods,
        "method": METHOD if exact else "ru_maxrss delta of a fresh child process (may under-read)",
    }


def measure_peak_memory(
    bundle: Path, methods: list[str], threads: int | None, python: str | None = None, timeout: float = 600
) -> dict[str, Any]:
    cmd = [python or sys.executable, "-m", "elasticdit.profile.memory", str(bundle), *methods]
    if threads:
        cmd += ["--threads", str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProfileError(f"the peak-memory child for {methods[-1]} did not finish within {timeout:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProfileError(f"the peak-memory child for {methods[-1]} failed: {tail}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m elasticdit.profile.memory")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("methods", nargs="+")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(child(args.bundle, args.methods, args.threads)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
