"""coremltools, imported with its import-time chatter kept off the terminal (every iOS module imports it here)."""

from __future__ import annotations

from typing import Any

from ...quiet import python_output_captured, silence_library_noise


def coremltools() -> Any:
    silence_library_noise()
    with python_output_captured():
        import coremltools as ct
    return ct
