"""Dropping a memory-mapped file's pages from this process's resident set.

A checkpoint's tensors are views of its file's pages (`checkpoint.py`); once read, the pages stay resident for the
life of the mapping. Where an export no longer needs them (after the finite check reads every weight, after
quantizing replaced the float weights), `release_mapped_pages` asks the kernel to reclaim them
(`madvise(MADV_PAGEOUT)`, Linux 5.4+): a clean page is dropped and read again from the file if touched, a page this
process wrote (copy-on-write, anonymous since) is left as it is, so what the tensors hold never changes. Elsewhere
(no /proc, another OS, an older kernel) it does nothing: the pages stay, as before.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

MADV_PAGEOUT = 21


def mapped_ranges(path: Path, maps: str = "/proc/self/maps") -> list[tuple[int, int]]:
    """(start, end) of every mapping of `path` in this process."""
    target = str(path.resolve())
    found = []
    try:
        lines = Path(maps).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            found.append((start, end))
    return found


def release_mapped_pages(path: Path) -> int:
    """Ask the kernel to reclaim the resident pages of every mapping of `path`; the bytes advised (0 where the
    platform cannot)."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advised = 0
    for start, end in mapped_ranges(path):
        if libc.madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
    return advised
