"""Named errors of the native runtime's Python side."""

from __future__ import annotations

from ..errors import ElasticDiTError


class NativeBuildError(ElasticDiTError):
    """elasticdit-run cannot be built here (no compiler, cmake too old, a failed configure or compile)."""


class NativeRunError(ElasticDiTError):
    """elasticdit-run exited with one of its named errors (`kind` is its name: BundleError, ShapeError, ...)."""

    def __init__(self, kind: str, message: str, exit_code: int):
        super().__init__(f"elasticdit-run: {kind}: {message}")
        self.kind, self.message, self.exit_code = kind, message, exit_code


class RunnerError(ElasticDiTError):
    """`--runner` names no elasticdit-run build (a missing file, or another program such as executor_runner)."""
