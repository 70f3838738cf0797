"""Android quantization: PT2E int8 (XNNPACKQuantizer) and torchao 8da4w, both lowered by XNNPACK.

Weight-only int8 is not offered: XNNPACK leaves `dequantize_affine` outside (or, with the default
partitioner, drops the weight scale and returns wrong numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def pt2e_int8(
    module: nn.Module, example: tuple[torch.Tensor, ...], calibration: Sequence[tuple[torch.Tensor, ...]]
) -> torch.export.ExportedProgram:
    """Symmetric per-channel int8 weights, dynamic int8 activations; returns the quantized program."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    with torch.no_grad():
        graph = torch.export.export(module, example).module()
        graph = prepare_pt2e(graph, quantizer)
        for inputs in calibration:
            graph(*inputs)
        graph = convert_pt2e(graph)
        return torch.export.export(graph, example)


def torchao_8da4w(module: nn.Module, group_size: int) -> int:
    """int4 weights in groups, dynamic int8 activations, on every Linear whose width the group divides.

    Quantizes in place, once, so every method that shares these Linears shares the int4 weights.
    Returns the number of Linears quantized.
    """
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerGroup, quantize_

    chosen = {id(m) for m in module.modules() if isinstance(m, nn.Linear) and m.in_features % group_size == 0}
    quantize_(
        module,
        Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group_size)),
        filter_fn=lambda m, _fqn: id(m) in chosen,
    )
    return len(chosen)
