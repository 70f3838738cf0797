"""What machine this is: the same fields on the host and on an ssh board (no heavy imports)."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path
from typing import Any


def host_info(threads: int | None = None) -> dict[str, Any]:
    """What this machine is (the same fields on the host and on an ssh board)."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^(model name|Hardware|Model)\s*:\s*(.+)$", text, re.M)
        if found:
            cpu = found.group(2).strip()
    except OSError:
        pass
    model = None
    with contextlib.suppress(OSError):
        model = Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode("utf-8", "replace")
    ram_mb = None
    try:
        found = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        ram_mb = round(int(found.group(1)) / 1024) if found else None
    except OSError:
        pass
    return {
        "kind": "host",
        "name": platform.node(),
        "model": model,
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "ram_mb": ram_mb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "threads": threads,
    }
