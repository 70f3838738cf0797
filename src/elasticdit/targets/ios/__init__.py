"""iOS: one Core ML multifunction ML program (`model.mlpackage`), a function per method, weights stored once.
Core ML runs only on Apple platforms: on Linux `verify` checks the package and runs the converted graph with its
weights; `--device ios` profiles through Core ML on a Mac."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from ...footprint import GIB, PhoneLimits, WeightStorage
from ...lowering import Formulation
from ..base import Artifact, HostRunner, ProfileBackend, Reference, Target

if TYPE_CHECKING:
    from ...bundle.manifest import Manifest
    from ...lowering import LoweredUnit
    from ...model.pipeline import Models
    from ...progress import Reporter
    from ...recipes import Recipe
    from ...slicing import ExportUnit


class IOSTarget(Target):
    name = "ios"
    default_recipe = "ios-fp16"
    schemes = ("none", "linear-int8", "palettize")
    recipe_defaults = MappingProxyType({"precision": "fp16"})
    # norms row-scaled: under fp16 compute a plain LayerNorm's square overflows once activations pass ~255
    formulation = Formulation(means="reduction", decompose=True, norms="fp16_safe")
    transports = ("ios",)
    runs_without_checkpoint = False  # on Linux its runner rebuilds each graph from the checkpoint
    # Core ML fails to load a package whose weight.bin passes 2 GiB (coremltools issue 1807); the Neural Engine
    # wants each function's weights under about 1 GB (ml-stable-diffusion's --chunk-unet): 1e9 bytes here
    limits = PhoneLimits(
        weight_file_bytes=2 * GIB,
        function_bytes=1_000_000_000,
        weight_file_rule="the package's one weight.bin",
        function_rule="Neural Engine's per-function",
    )
    chunks_transformer = True  # one package per block range (`chunking.py`), decode / encode_text in the first

    def weight_storage(self, recipe: Recipe) -> WeightStorage:
        float_bytes = 2.0 if recipe.precision == "fp16" else 4.0
        if recipe.quantization == "linear-int8":
            return WeightStorage(float_bytes, 1.0)
        if recipe.quantization == "palettize":  # nbits per value (+ a small lookup table per group)
            return WeightStorage(float_bytes, recipe.nbits / 8)
        return WeightStorage(float_bytes, float_bytes)

    def write(
        self,
        lowered: list[LoweredUnit],
        recipe: Recipe,
        folder: Path,
        report: Reporter,
        weights: str = "inline",
        release: Callable[[], object] = lambda: None,
    ) -> list[Artifact]:
        from ...chunking import package_file
        from .convert import write_package

        if all(lu.unit.chunk is None for lu in lowered):
            return write_package(lowered, recipe, folder, report, release=release)
        artifacts = []
        for index in sorted({lu.unit.chunk for lu in lowered if lu.unit.chunk is not None}):
            group = [lu for lu in lowered if lu.unit.chunk == index or (index == 0 and lu.unit.chunk is None)]
            artifacts += write_package(group, recipe, folder, report, package_file(index), release)
        return artifacts

    def host_runner(
        self, bundle: Path, manifest: Manifest, threads: int | None = None, models: Models | None = None
    ) -> HostRunner:
        from .runner import host_runner

        return host_runner(bundle, manifest, models, self.formulation)

    def reference(self, models: Models, recipe: Recipe, unit: ExportUnit) -> Reference | None:
        """Every method: the checkpoint's unit in Core ML's compute precision, with its weights as a fresh
        conversion (and the recipe's compression, for denoise methods) stores them (`reference.py`)."""
        from .reference import coreml_reference

        return coreml_reference(unit, recipe, self.formulation)

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
