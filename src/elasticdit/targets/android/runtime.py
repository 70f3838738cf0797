"""Run an Android bundle's `.pte` on this host through ExecuTorch's Python runtime (XNNPACK); a program exported
with `--weights external` loads its `.ptd` beside it (`data_path`), checked against the manifest first."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...errors import BundleError, ExternalWeightsError, KernelError, first_line
from ...quiet import native_stderr_captured


def checked_data_file(bundle: Path, manifest: Any, entry: Any) -> Path | None:
    """The weights file `entry` loads beside its program (None when inline), after checking that it is there and
    is the file the manifest hashed (size and sha256): a missing or altered `.ptd` is an `ExternalWeightsError`,
    never a run on other weights."""
    from ...bundle.files import sha256_file

    name = getattr(entry, "data_file", None)
    if not name:
        return None
    path = bundle / name
    listed = next((f for f in manifest.files if f.get("path") == name), None)
    if listed is None:
        raise ExternalWeightsError(f"method {entry.method}'s weights file {name} is not in the manifest's file list")
    if path.is_symlink() or not path.is_file():
        raise ExternalWeightsError(f"{path} is missing: {entry.method} keeps its weights there (--weights external)")
    if path.stat().st_size != listed["bytes"] or sha256_file(path) != listed["sha256"]:
        raise ExternalWeightsError(
            f"{path} is not the weights file this bundle was exported with (size or sha256 differs): re-export or "
            "restore it"
        )
    return path


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
    def __init__(
        self, path: str | Path, threads: int | None = None, etdump: bool = False, data_path: Path | None = None
    ):
        from executorch.runtime import Runtime

        set_threads(threads)
        self.path = Path(path)
        self.etdump = etdump
        self.data_path = data_path
        with native_stderr_captured() as log:
            try:
                self.program = Runtime.get().load_program(
                    str(self.path), enable_etdump=etdump, debug_buffer_size=0, data_path=data_path
                )
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
                    if self.data_path is None and any("NamedDataMap" in line or "external" in line for line in log):
                        raise ExternalWeightsError(
                            f"ExecuTorch cannot load method {name}: its weights are external and no .ptd was given "
                            f"({detail})"
                        ) from None
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
    """The host runner of an Android bundle: each method from the program of the file its entry names (with the
    weights file it names, checked once)."""

    def __init__(self, bundle: Path, threads: int | None = None, manifest: Any = None):
        require_runtime_ops(manifest.runtime_ops if manifest is not None else ())
        self.bundle, self.threads, self.manifest = Path(bundle), threads, manifest
        self._programs: dict[tuple[str, str | None], ExecuTorchProgram] = {}

    def run(self, entry, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        key = (entry.file, getattr(entry, "data_file", None))
        if key not in self._programs:
            data = checked_data_file(self.bundle, self.manifest, entry) if key[1] else None
            self._programs[key] = ExecuTorchProgram(self.bundle / entry.file, self.threads, data_path=data)
        return self._programs[key].run(entry.method, inputs)

    def note(self, entry) -> str:
        return ""
