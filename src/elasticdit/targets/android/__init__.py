"""Android: one ExecuTorch program (`model.pte`) lowered to XNNPACK; run by ExecuTorch's runtime on the host,
`executor_runner` on a phone (adb) and the ExecuTorch Python runtime on a Linux board (ssh); its app side is
`elasticdit-run` (runtime/, `native/`), on the host, on a phone over adb and on aarch64 under emulation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ...footprint import WeightStorage
from ..base import AppRunner, Artifact, HostRunner, ProfileBackend, Reference, Target

if TYPE_CHECKING:
    from ...bundle.manifest import Manifest
    from ...lowering import LoweredUnit
    from ...model.pipeline import Models
    from ...progress import Reporter
    from ...recipes import Recipe
    from ...slicing import ExportUnit


class AndroidTarget(Target):
    name = "android"
    default_recipe = "android-fp32"
    schemes = ("none", "pt2e-int8", "8da4w")
    transports = ("host", "adb", "ssh")
    weights_forms = ("inline", "external")  # external: model.pte + model.ptd (program-data separation)
    custom_ops = ("elasticdit::ssba_attention",)  # elasticdit's kernels (kernels/native), loaded or linked in

    def weight_storage(self, recipe: Recipe) -> WeightStorage:
        if recipe.quantization == "8da4w":  # int4 values + a bf16 scale per group
            return WeightStorage(4.0, 0.5 + 2.0 / recipe.group_size)
        if recipe.quantization == "pt2e-int8":  # int8 values, a scale per output channel
            return WeightStorage(4.0, 1.0)
        return WeightStorage()

    def write(
        self,
        lowered: list[LoweredUnit],
        recipe: Recipe,
        folder: Path,
        report: Reporter,
        weights: str = "inline",
        release: Callable[[], object] = lambda: None,
    ) -> list[Artifact]:
        from .export import write_program

        return write_program(lowered, folder, report, external=weights == "external", release=release)

    def host_runner(
        self, bundle: Path, manifest: Manifest, threads: int | None = None, models: Models | None = None
    ) -> HostRunner:
        from .runtime import ExecuTorchRunner

        return ExecuTorchRunner(bundle, threads, manifest)

    def profile_backend(self, bundle: Path, manifest: Manifest, threads: int | None) -> ProfileBackend:
        from .profile import ExecuTorchHost

        return ExecuTorchHost(bundle, threads, manifest)

    def reference(self, models: Models, recipe: Recipe, unit: ExportUnit) -> Reference | None:
        """For the denoise methods of a quantized recipe, the quantized model itself: the checkpoint's unit
        exported again by this tool's recipe and run in the same runtime (`rebuilt_reference`). A PyTorch run of
        the quantized module differs from the runtime's integer rounding by as much as the quantization error
        itself (docs/design.md, "verify"), too coarse to see a wrong lowering."""
        from ...quant import applies

        return self.rebuilt_reference(models, recipe, unit) if applies(recipe.quantization, unit.kind) else None

    def app_runner(self, bundle: Path, runner: str | Path) -> AppRunner:
        from ...native.run import NativeRunner

        return NativeRunner.resolve(runner)
