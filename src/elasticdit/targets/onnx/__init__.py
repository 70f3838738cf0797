"""ONNX: a graph per method sharing one `weights.bin`; run by ONNX Runtime on the host and on a Linux board (ssh)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ...footprint import WeightStorage
from ..base import Artifact, HostRunner, ProfileBackend, Reference, Target

if TYPE_CHECKING:
    from ...bundle.manifest import Manifest
    from ...lowering import LoweredUnit
    from ...model.pipeline import Models
    from ...progress import Reporter
    from ...recipes import Recipe
    from ...slicing import ExportUnit


class OnnxTarget(Target):
    name = "onnx"
    default_recipe = "onnx-fp32"
    schemes = ("none", "dynamic-int8")
    transports = ("host", "ssh")

    def weight_storage(self, recipe: Recipe) -> WeightStorage:
        return WeightStorage(4.0, 1.0) if recipe.quantization == "dynamic-int8" else WeightStorage()

    def write(
        self,
        lowered: list[LoweredUnit],
        recipe: Recipe,
        folder: Path,
        report: Reporter,
        weights: str = "inline",
        release: Callable[[], object] = lambda: None,
    ) -> list[Artifact]:
        from .graphs import write_graphs

        return write_graphs(lowered, recipe, folder, report, release)

    def host_runner(
        self, bundle: Path, manifest: Manifest, threads: int | None = None, models: Models | None = None
    ) -> HostRunner:
        from .runtime import OnnxRunner

        return OnnxRunner(bundle, manifest, threads)

    def profile_backend(self, bundle: Path, manifest: Manifest, threads: int | None) -> ProfileBackend:
        from .profile import OnnxHost

        return OnnxHost(bundle, manifest, threads)

    def reference(self, models: Models, recipe: Recipe, unit: ExportUnit) -> Reference | None:
        """For the denoise methods of a quantized recipe, the quantized model itself: the checkpoint's unit
        exported again by this tool's recipe and run in the same runtime (`rebuilt_reference`). A PyTorch run of
        the quantized module differs from the runtime's integer rounding by as much as the quantization error
        itself (docs/design.md, "verify"), too coarse to see a wrong lowering."""
        from ...quant import applies

        return self.rebuilt_reference(models, recipe, unit) if applies(recipe.quantization, unit.kind) else None
