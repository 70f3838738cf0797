"""Keep third-party chatter off the terminal: loggers, import-time warnings, progress bars and the native
runtimes' log lines. The one place that knows how each library talks."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

NOISY_LOGGERS = (
    "torchao",
    "torch.utils._pytree",
    "executorch",
    "coremltools",
    "torch._export",
    "torch.export",
    "torch.onnx",
    "onnxscript",
)


def silence_library_noise() -> None:
    """Loggers of NOISY_LOGGERS (and their children already created) at ERROR, deprecation warnings off. Call it
    before importing torch-family packages (torchao logs missing CUDA kernels as warnings) and again before a step
    that creates loggers of its own (the ONNX exporter's "torchvision is not installed" and the like)."""
    for name in [*NOISY_LOGGERS, *list(logging.root.manager.loggerDict)]:
        if name.startswith(NOISY_LOGGERS):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TorchScript.*")


@contextlib.contextmanager
def python_output_captured() -> Iterator[io.StringIO]:
    """sys.stdout and sys.stderr into one buffer for the duration (tqdm bars, print-based reports)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Route fd 2 (where C++ runtimes log) to a buffer for the duration; the lines are returned in the list."""
    lines: list[str] = []
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # stderr replaced (e.g. under a test runner)
        yield lines
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())
