"""What a target is: everything that differs between backends, behind one interface.

A target (`android`: ExecuTorch + XNNPACK, `ios`: Core ML, `onnx`: ONNX Runtime) owns, in its own folder:

- its recipes (`recipes/*.toml`, the default named by `default_recipe`) and the quantization schemes it offers;
- its lowering choices (`formulation`; the SSBA core comes from the recipe);
- `write`: the artifact(s) from the lowered programs, one typed `Artifact` per method;
- `host_runner`: running the bundle's methods on this host (verify, generate, eval);
- `profile_backend`: loading and timing methods for the profiler (`--device host`, and what the devices it
  names in `transports` run);
- `reference`: what `verify` compares a method's output with, of the artifact's own numerics (the quantized model
  itself; the float32 PyTorch reference by default).

The seams later work fills in per target, each with a default here: `reference` (a same-numerics reference for
`verify`: the quantized model itself), `runtime_ops` (custom operators the runtime must provide, e.g. an SSBA
kernel), `app_runner` (the native app-side pipeline that runs its bundles: `elasticdit-run` for ExecuTorch
programs), and extra files beside the program (external weights, `weights_forms`: every file the target writes
into the folder is hashed into the manifest's `files`, `Artifact.file` names the one a method is loaded from and
`Artifact.data_file` the weights file it needs beside it). docs/design.md lists what a new target implements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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
    from ..slicing import ExportUnit


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
    runtime_ops: tuple[str, ...] = ()  # operators it calls that a stock runtime lacks (Target.runtime_ops)


@dataclass(frozen=True)
class Reference:
    """A method's reference of the artifact's own numerics: `run(inputs)` -> outputs; `name` says what it is."""

    name: str
    run: Callable[[list[torch.Tensor]], list[torch.Tensor]]
    close: Callable[[], None] = lambda: None  # frees what it holds (a temporary folder)


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


class AppRunner(Protocol):
    """A native app-side pipeline (tokenizer, text encoder, sampler, decoder in one process, as an app runs it):
    `generate` returns its timings document (docs/runtime.md) and writes the image when given a path."""

    emulated: bool  # run under an emulator: its times are not latencies

    def generate(self, bundle: Path, prompt: str, noise: Any, output: Path | None = None, **options: Any) -> dict: ...


class Target(ABC):
    name: str
    default_recipe: str
    schemes: tuple[str, ...] = ("none",)
    recipe_defaults: Mapping[str, Any] = MappingProxyType({})
    formulation: Formulation = Formulation()
    transports: tuple[str, ...] = ("host",)  # `--device` kinds that run its bundles
    runs_without_checkpoint: bool = True  # its host runner needs only the bundle (generate, eval)
    weights_forms: tuple[str, ...] = ("inline",)  # `export --weights`: inline (in the program) or external
    limits: PhoneLimits = PhoneLimits()  # what its artifacts must respect on a phone (none by default)
    chunks_transformer: bool = False  # over its limits, the transformer may be split into block-range artifacts
    custom_ops: tuple[str, ...] = ()  # custom operators its runtime can be built with (a recipe lowering to others
    # is refused when it is read: recipes.parse_recipe)

    def weight_storage(self, recipe: Recipe) -> WeightStorage:
        """Bytes per element its artifact stores for float tensors and quantized denoise weights under `recipe`
        (the planned footprint: `footprint.py`); float32 and nothing quantized by default."""
        return WeightStorage()

    @abstractmethod
    def write(
        self,
        lowered: list[LoweredUnit],
        recipe: Recipe,
        folder: Path,
        report: Reporter,
        weights: str = "inline",
        release: Callable[[], object] = lambda: None,
    ) -> list[Artifact]:
        """Write the artifact(s) into `folder`; one Artifact per lowered unit, in their order. `weights` is one
        of `weights_forms`; `release` drops the checkpoint's read pages (`Checkpoint.release_pages`): a writer that
        handles one method at a time calls it after each."""

    @abstractmethod
    def host_runner(
        self, bundle: Path, manifest: Manifest, threads: int | None = None, models: Models | None = None
    ) -> HostRunner:
        """Runs the bundle's methods on this host; `models` (the checkpoint's) for targets that need them."""

    def runtime_ops(self, artifacts: list[Artifact]) -> list[str]:
        """The custom operators the bundle's runtime must provide (the manifest's `runtime_ops`, omitted when
        empty), sorted: by default what the writer reported per method, none for a target whose runtime has
        no custom operators. The target's host runner and profile backend refuse a bundle whose list this
        host's runtime lacks."""
        return sorted({op for artifact in artifacts for op in artifact.runtime_ops})

    def profile_backend(self, bundle: Path, manifest: Manifest, threads: int | None) -> ProfileBackend:
        from ..errors import BundleError

        raise BundleError(f"{bundle} is an {self.name} bundle; this host cannot time its methods")

    def app_runner(self, bundle: Path, runner: str | Path) -> AppRunner:
        """The native app-side runner of this target's bundles (`generate --runner`, `profile --runner`): `runner`
        is "native" (this host's build, made on demand) or a path to a build. None by default."""
        from ..errors import BundleError

        raise BundleError(
            f"{bundle} is an {self.name} bundle; no native app-side runner runs it (elasticdit-run runs ExecuTorch "
            "programs: docs/runtime.md)"
        )

    def reference(self, models: Models, recipe: Recipe, unit: ExportUnit) -> Reference | None:
        """The reference `verify` compares a method with: the model of the artifact's numerics under `recipe` (the
        tool's own recipe of the bundle's name), built from `unit`, the method sliced from the checkpoint with
        the reference attention (`masked`). None: the float32 PyTorch reference (`unit.module`) is it."""
        return None

    def rebuilt_reference(self, models: Models, recipe: Recipe, unit: ExportUnit) -> Reference:
        """`unit` with the recipe's attention lowering, lowered with `recipe` by this tool's own export path
        (quantized as the export quantizes it) into a temporary folder, run
        by this target's host runner: the quantized model itself, in the runtime whose integer rounding the
        bundle's artifact uses."""
        import shutil
        import tempfile
        from types import SimpleNamespace

        from ..bundle.files import file_entries
        from ..bundle.manifest import MethodEntry
        from ..lowering import lower
        from ..progress import reporter
        from ..slicing import denoise_unit

        batch = unit.example_inputs[0].shape[0]
        if unit.point is not None and recipe.attention != unit.module.attention:
            # lowered as the export lowers it: masked and tiled attention round differently in float32, and
            # dynamic int8 activation quantization turns that into ~2e-3 at the output (demo checkpoint, r1_d6);
            # verify checks the recipe's lowering against masked attention separately, in float32
            lowered = unit.point, unit.module.resolution, recipe.attention, batch
            unit = replace(denoise_unit(models, *lowered), method=unit.method)

        folder = Path(tempfile.mkdtemp(prefix="elasticdit-reference-"))
        try:
            with reporter(2, False) as report:
                lowered = lower(models, [unit], recipe, self.formulation, report)
                (artifact,) = self.write(lowered, recipe, folder, report)
            entry = MethodEntry(
                kind=unit.kind,
                method=unit.method,
                file=artifact.file,
                inputs=artifact.inputs,
                outputs=artifact.outputs,
                data_file=artifact.data_file,
            )
            # what a host runner reads of a manifest: its methods, runtime_ops, and the hashed files (a data_file
            # is checked against them)
            manifest: Any = SimpleNamespace(
                methods=lambda: [entry],
                runtime_ops=list(artifact.runtime_ops),
                files=file_entries(folder) if artifact.data_file else [],
            )
            runner = self.host_runner(folder, manifest, None, models)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return Reference(
            f"{recipe.name} export of the checkpoint's unit (masked attention), run in this host's runtime",
            lambda inputs: runner.run(entry, inputs),
            lambda: shutil.rmtree(folder, ignore_errors=True),
        )
