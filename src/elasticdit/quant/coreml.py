"""Core ML weight compression (coremltools.optimize.coreml) of one single-function model, before the merge.

Compression touches only the weights of COMPRESSED_OPS (never the SSBA mask, whose -inf entries a linear
quantizer would turn into NaN, nor position codes); tensors of at most WEIGHT_THRESHOLD elements stay fp16.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..model.elastic_dit import OUTPUT_PROJECTION
from ..quiet import python_output_captured
from ..recipes import Recipe

COMPRESSED_OPS = ("linear", "conv", "conv_transpose", "matmul")
WEIGHT_THRESHOLD = 2048


class Palettes:
    """coremltools' k-means look-up tables, each distinct weight group clustered once.

    Every operating point's function holds the same blocks, and k-means is most of a palettized export's time (42
    minutes for the first 8-block function of a full-scale package on this 2-core machine, docs/ios.md), so one
    `Palettes` serves all the functions of a package: passed as `mode="custom"`'s `lut_function`, it runs the
    function `mode="kmeans"` runs (one thread, so deterministic) on a group it has not seen and returns the stored
    result for one it has, by the group's bytes, shape and dtype.
    The compressed weights are those of `mode="kmeans"`, byte for byte (tests/test_ios_export.py)."""

    def __init__(self, nbits: int) -> None:
        self.nbits = nbits
        self.clustered = self.reused = 0
        self._tables: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    @staticmethod
    def key(group: np.ndarray) -> bytes:
        digest = hashlib.blake2b(f"{group.dtype}{group.shape}".encode(), digest_size=20)
        digest.update(np.ascontiguousarray(group).data)
        return digest.digest()

    def __call__(self, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = self.key(group)
        found = self._tables.get(key)
        if found is None:
            from coremltools.optimize.coreml._quantization_passes import palettize_weights

            # the KMEANS branch of the pass, as grouped_channelwise_compress calls it (cluster_dim 1, vector axis 0)
            found = self._tables[key] = palettize_weights._get_lut_and_indices(group, "KMEANS", self.nbits, None, 1, 0)
            self.clustered += 1
        else:
            self.reused += 1
        return found


def compression_config(recipe: Recipe, palettes: Palettes | None = None) -> Any:
    """None for `none`; else the per-op config of the recipe's scheme for the weights of COMPRESSED_OPS.
    Palettization takes its tables from `palettes` (a fresh `Palettes` if none is given)."""
    import coremltools.optimize.coreml as cto

    if recipe.quantization == "linear-int8":
        op = cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD
        )
    elif recipe.quantization == "palettize":
        op = cto.OpPalettizerConfig(
            mode="custom",
            lut_function=palettes or Palettes(recipe.nbits),
            granularity="per_grouped_channel",
            group_size=recipe.group_size,
            weight_threshold=WEIGHT_THRESHOLD,
            num_kmeans_workers=1,
        )
    else:
        return None
    return cto.OptimizationConfig(op_type_configs=dict.fromkeys(COMPRESSED_OPS, op))


def output_projection_weights(mlmodel: Any) -> list[str]:
    """Names of the const ops holding the output projections' weights (`proj_out`, `proj_out_r{r}`)."""
    return sorted(
        op.name
        for function in mlmodel._mil_program.functions.values()
        for op in function.operations
        if op.op_type == "const" and OUTPUT_PROJECTION in op.name
    )


def compress(mlmodel: Any, recipe: Recipe, method: str, palettes: Palettes | None = None) -> Any:
    """Weight compression of one single-function model (coremltools refuses multifunction models).

    Palettization leaves the output projections in fp16: their error goes straight into the velocity (on the
    velocity-predicting trained demo dc0534d5, 4-bit palettes there cost 3-4 dB of denoise SNR for 0.3 MB).
    Functions sharing weights should share `palettes`. coremltools' exceptions pass through: the iOS target names
    the op they came from."""
    config = compression_config(recipe, palettes)
    if config is None:
        return mlmodel
    if recipe.quantization == "palettize":
        for name in output_projection_weights(mlmodel):
            config.set_op_name(name, None)
    import coremltools.optimize.coreml as cto
    from threadpoolctl import threadpool_limits

    step = cto.linear_quantize_weights if recipe.quantization == "linear-int8" else cto.palettize_weights
    # sklearn's k-means on many small groups: one OpenMP thread is both faster and reproducible here
    with python_output_captured(), threadpool_limits(limits=1):
        return step(mlmodel, config)
