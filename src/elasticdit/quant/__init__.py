"""Quantization schemes, found by the name a recipe's `quantization.scheme` gives.

A scheme works at one stage of the export:

- `module`: on the shared float modules before torch.export (torchao's 8da4w): every denoise method is exported
  from the same quantized copy, so they share the quantized weights;
- `program`: in place of torch.export for one method (PT2E: export, prepare, observe the weights, convert, export);
- `artifact`: on what the target converted one method to (a Core ML model, an ONNX graph).

One rule for all: only denoise methods are quantized; decode and encode_text stay float (`applies`).
Each target lists the schemes it offers (`Target.schemes`); the implementations live beside this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..specs import MethodKind
from . import coreml, onnx_dynamic, xnnpack

NONE = "none"


@dataclass(frozen=True)
class Scheme:
    name: str
    stage: str  # "module" | "program" | "artifact"
    run: Callable[..., Any]
    about: str


SCHEMES: Mapping[str, Scheme] = MappingProxyType(
    {
        s.name: s
        for s in (
            Scheme(
                "8da4w", "module", xnnpack.torchao_8da4w, "torchao int4 weights in groups, dynamic int8 activations"
            ),
            Scheme("pt2e-int8", "program", xnnpack.pt2e_int8, "PT2E XNNPACKQuantizer, per-channel int8, dynamic"),
            Scheme("linear-int8", "artifact", coreml.compress, "Core ML linear_quantize_weights, int8 per channel"),
            Scheme("palettize", "artifact", coreml.compress, "Core ML palettize_weights, k-means look-up tables"),
            Scheme("dynamic-int8", "artifact", onnx_dynamic.quantize, "ONNX Runtime quantize_dynamic, int8"),
        )
    }
)


def applies(scheme: str, kind: MethodKind | str) -> bool:
    """Whether a method of this kind is quantized under `scheme`: denoise methods only."""
    return scheme != NONE and kind == MethodKind.DENOISE


def scheme(name: str) -> Scheme | None:
    """The scheme of that name; None for "none"."""
    return None if name == NONE else SCHEMES[name]
