"""What a target is: everything that differs between backends, behind one interface.

A target (`android`: ExecuTorch + XNNPACK, `ios`: Core ML, `onnx`: ONNX Runtime) owns, in its own folder:

- its recipes (`recipes/*.toml`, the default named by `default_recipe`) and the quantization schemes it offers;
- its lowering choices (`formulation`; the SSBA core comes from the recipe);
- `write`: the artifact(s) from the lowered programs, one typed `Artifact` per method;
- `host_runner`: running the bundle's methods on this host (verify, generate, eval);
- `profile_backend`: loading and timing methods for the profiler (`--device host`, and what the devices it
  names in `transports` run).

The seams later work fills in per target, each with a default here: `reference` (a same-numerics reference for
`verify`: the quantized model itself), `runtime_ops` (custom operators the runtime must provide, e.g. an SSBA
kernel), and extra files beside the program (external weights, `weights_forms`: every file the target writes into
the folder is hashed into the manifest's `files`, `Artifact.file` names the one a method is loaded from and
`Artifact.data_file` the weights file it needs beside it). docs/design.md lists what a new target implements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ..footprint import PhoneLimits, WeightStorage
from ..lowering import Formulation
from ..specs import TensorSpec

if TYPE_CHECKING:
    from ..bundle.manifest import Manifest, MethodEntry
    from ..lowering import LoweredUnit
    from ..model.pipeline import Models
    from ..progress import Reporter
    from ..recipes import Recipe


@dataclass(frozen=True)
class Artifact:
    """What a target wrote for one method: the file it is loaded from, its signature as the artifact really takes
    it (Core ML: int32 token ids), and the backend's report on it (delegation, op histogram, ...)."""

    method: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    report: dict[str, Any] = field(default_factory=dict)
    data_file: str | None = None  # the weights file the program loads beside it (`--weights external`), if any
    arena_bytes: int | None = None  # the activation memory the runtime plans for the method, where known


class HostRunner(Protocol):
    def run(self, entry: MethodEntry, inputs: list[torch.Tensor]) -> list[torch.Tensor]: ...

    def note(self, entry: MethodEntry) -> str:
        """How the method was run, when that is not the artifact itself in its runtime (empty otherwise)."""
        ...


class ProfileBackend(Protocol):
    backend: str  # what runs the methods, for the report
    runtime_start_ms: float

    def load(self, entry: MethodEntry, etdump: bool = False) -> tuple[Any, float]: ...

    def execute(self, handle: Any, entry: MethodEntry, inputs: list[torch.Tensor]) -> None: ...

    def ops(self, entry: MethodEntry, inputs: list[torch.Tensor]) -> dict[str, Any] | None: ...


class Target(ABC):
    name: str
    default_recipe: str
    schemes: tuple[str, ...] = ("none",)
    recipe_defaults: Mapping[str, Any] = MappingProxyType({})
    formulation: Formulation = Formulation()
    transports: tuple[str, ...] = ("host",)  # `--device` kinds that run its bundles
    runs_without_checkpoint: bool = True  # its host runner needs only the bundle (generate, eval)
    runtime_ops: tuple[str, ...] = ()  # custom operators its runtime must provide (none yet)
    weights_forms: tuple[str, ...] = ("inline",)  # `export --weights`: inline (in the program) or external
    limits: PhoneLimits = PhoneLimits()  # what its artifacts must respect on a phone (none by default)

    def weight_storage(self, recipe: Recipe) -> WeightStorage:
        """Bytes per element its artifact stores for float tensors and quantized denoise weights under `recipe`
        (the planned footprint: `footprint.py`); float32 and nothing quantized by default."""
        return WeightStorage()

    @abstractmethod
    def write(
        self, lowered: list[LoweredUnit], recipe: Recipe, folder: Path, report: Reporter, weights: str = "inline"
    ) -> list[Artifact]:
        """Write the artifact(s) into `folder`; one Artifact per lowered unit, in their order. `weights` is one
        of `weights_forms`."""

    @abstractmethod
    def host_runner(
        self, bundle: Path, manifest: Manifest, threads: int | None = None, models: Models | None = None
    ) -> HostRunner:
        """Runs the bundle's methods on this host; `models` (the checkpoint's) for targets that need them."""

    def profile_backend(self, bundle: Path, manifest: Manifest, threads: int | None) -> ProfileBackend:
        from ..errors import BundleError

        raise BundleError(f"{bundle} is an {self.name} bundle; this host cannot time its methods")

    def reference(self, models: Models, manifest: Manifest, entry: MethodEntry) -> Any | None:
        """A reference with the artifact's own numerics for `verify` (the quantized model itself); None: the
        float32 PyTorch reference is the only one (every target today)."""
        return None
