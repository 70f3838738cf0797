"""Run an Android bundle's `.pte` on this host through ExecuTorch's Python runtime (XNNPACK)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ...errors import BundleError, KernelError, first_line
from ...quiet import native_stderr_captured


def set_threads(threads: int | None) -> None:
    """XNNPACK's pool size; must be set before a program is loaded (a loaded method keeps its pool)."""
    if threads:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(int(threads))


def require_runtime_ops(ops: Sequence[str]) -> None:
    """Make this process's runtime provide every op of a manifest's `runtime_ops`: elasticdit's kernels are
    loaded (built on first use) when an `elasticdit::` op is listed; a `KernelError` names every op still
    missing. Every host path that runs an Android bundle (verify, generate, eval, the profilers, the ssh remote
    runner) comes through here, before any program is loaded."""
    if not ops:
        return
    if any(op.startswith("elasticdit::") for op in ops):
        from ...kernels.build import load_kernels

        load_kernels()
    from executorch.extension.pybindings import portable_lib

    available = set(portable_lib._get_operator_names())
    missing = [op for op in ops if op not in available]
    if missing:
        raise KernelError(
            f"this ExecuTorch runtime lacks {', '.join(missing)}, which the bundle's program calls "
            "(a bundle exported with lowering.attention = 'kernel' needs elasticdit's kernels, docs/ssba.md)"
        )


class ExecuTorchProgram:
    def __init__(self, path: str | Path, threads: int | None = None, etdump: bool = False):
        from executorch.runtime import Runtime

        set_threads(threads)
        self.path = Path(path)
        self.etdump = etdump
        with native_stderr_captured() as log:
            try:
                self.program = Runtime.get().load_program(str(self.path), enable_etdump=etdump, debug_buffer_size=0)
            except Exception as exc:
                self.program = None
                error = first_line(exc)
        if self.program is None:
            detail = next((line for line in reversed(log) if "rror" in line), "")
            raise BundleError(f"ExecuTorch cannot load {self.path}: {error} {detail}".strip())
        self._methods: dict[str, object] = {}

    @property
    def method_names(self) -> set[str]:
        return set(self.program.method_names)

    def load(self, name: str):
        if name not in self._methods:
            if name not in self.method_names:
                raise BundleError(f"{self.path.name} has no method '{name}'")
            with native_stderr_captured() as log:
                try:
                    self._methods[name] = self.program.load_method(name)
                except Exception as exc:
                    detail = next((line for line in reversed(log) if "rror" in line), str(exc))
                    raise BundleError(f"ExecuTorch cannot load method {name}: {detail}") from None
        return self._methods[name]

    def run(self, name: str, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = self.load(name).execute([t.contiguous() for t in inputs])
        return [t.clone() for t in outputs]  # methods share one memory arena: copy out

    def write_etdump(self, path: str | Path) -> Path:
        path = Path(path)
        debug = path.with_suffix(".debug.bin")
        self.program.write_etdump_result_to_file(str(path), str(debug))
        if debug.exists() and debug.stat().st_size == 0:
            os.unlink(debug)
        return path


class ExecuTorchRunner:
    """The host runner of an Android bundle: each method from the program of the file its entry names."""

    def __init__(self, bundle: Path, threads: int | None = None, runtime_ops: Sequence[str] = ()):
        require_runtime_ops(runtime_ops)
        self.bundle, self.threads = Path(bundle), threads
        self._programs: dict[str, ExecuTorchProgram] = {}

    def run(self, entry, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if entry.file not in self._programs:
            self._programs[entry.file] = ExecuTorchProgram(self.bundle / entry.file, self.threads)
        return self._programs[entry.file].run(entry.method, inputs)

    def note(self, entry) -> str:
        return ""
