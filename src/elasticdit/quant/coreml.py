"""Core ML weight compression (coremltools.optimize.coreml) of one single-function model, before the merge.

Compression touches only the weights of COMPRESSED_OPS (never the SSBA mask, whose -inf entries a linear
quantizer would turn into NaN, nor position codes); tensors of at most WEIGHT_THRESHOLD elements stay fp16.
"""

from __future__ import annotations

from typing import Any

from ..model.elastic_dit import OUTPUT_PROJECTION
from ..quiet import python_output_captured
from ..recipes import Recipe

COMPRESSED_OPS = ("linear", "conv", "conv_transpose", "matmul")
WEIGHT_THRESHOLD = 2048


def compression_config(recipe: Recipe) -> Any:
    """None for `none`; else the per-op config of the recipe's scheme for the weights of COMPRESSED_OPS."""
    import coremltools.optimize.coreml as cto

    if recipe.quantization == "linear-int8":
        op = cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD
        )
    elif recipe.quantization == "palettize":
        op = cto.OpPalettizerConfig(
            mode="kmeans",
            nbits=recipe.nbits,
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


def compress(mlmodel: Any, recipe: Recipe, method: str) -> Any:
    """Weight compression of one single-function model (coremltools refuses multifunction models).

    Palettization leaves the output projections in fp16: their error goes straight into the velocity (on the
    velocity-predicting trained demo dc0534d5, 4-bit palettes there cost 3-4 dB of denoise SNR for 0.3 MB).
    coremltools' exceptions pass through: the iOS target names the op they came from."""
    config = compression_config(recipe)
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
