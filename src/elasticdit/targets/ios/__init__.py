"""iOS: one Core ML multifunction ML program (`model.mlpackage`), a function per method, weights stored once.
Core ML runs only on Apple platforms: on Linux `verify` checks the package and runs the converted graph with its
weights; `--device ios` profiles through Core ML on a Mac."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from ...lowering import Formulation
from ..base import Artifact, HostRunner, ProfileBackend, Target

if TYPE_CHECKING:
    from ...bundle.manifest import Manifest
    from ...lowering import LoweredUnit
    from ...model.pipeline import Models
    from ...progress import Reporter
    from ...recipes import Recipe


class IOSTarget(Target):
    name = "ios"
    default_recipe = "ios-fp16"
    schemes = ("none", "linear-int8", "palettize")
    recipe_defaults = MappingProxyType({"precision": "fp16"})
    formulation = Formulation(means="reduction", decompose=True)
    transports = ("ios",)
    runs_without_checkpoint = False  # on Linux its runner rebuilds each graph from the checkpoint

    def write(
        self, lowered: list[LoweredUnit], recipe: Recipe, folder: Path, report: Reporter, weights: str = "inline"
    ) -> list[Artifact]:
        from .convert import write_package

        return write_package(lowered, recipe, folder, report)

    def host_runner(
        self, bundle: Path, manifest: Manifest, threads: int | None = None, models: Models | None = None
    ) -> HostRunner:
        from .runner import host_runner

        return host_runner(bundle, manifest, models, self.formulation)

    def profile_backend(self, bundle: Path, manifest: Manifest, threads: int | None) -> ProfileBackend:
        from ...errors import BundleError
        from .profile import CoreMLHost, check_available

        try:
            check_available()
        except Exception:
            raise BundleError(
                f"{bundle} is an ios bundle; the host runs android (ExecuTorch) and onnx bundles "
                "(use --device ios on a Mac for Core ML bundles)"
            ) from None
        return CoreMLHost(bundle)  # pragma: no cover - macOS only
