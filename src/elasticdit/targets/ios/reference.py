"""`verify`'s same-numerics reference of an iOS method: the checkpoint's float unit (reference `masked`
attention), converted by `ct.convert` and compressed as the recipe says, its weights decoded by coremltools' MIL
reader (what Core ML materialises at load time) and run in PyTorch with Core ML's compute precision emulated
(`runner.run_graph`). Built from the checkpoint, never from the bundle, so a bundle whose weights, blocks or
attention differ cannot agree with it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from ...lowering import Formulation, export_program
from ...quant import applies
from ...quiet import python_output_captured
from ...recipes import Recipe
from ...slicing import ExportUnit
from ..base import Reference
from .convert import compress, convert
from .package import package_weights
from .runner import graph_inputs_from_package, run_graph


def compressed_weights(unit: ExportUnit, ep: torch.export.ExportedProgram, recipe: Recipe) -> dict[str, Any]:
    """The unit's weights as the recipe's compression of a fresh `ct.convert` leaves them, decoded."""
    mlmodel = compress(convert(unit, ep, recipe.precision, recipe.minimum_deployment_target), recipe, unit.method)
    with tempfile.TemporaryDirectory(prefix="elasticdit-coreml-ref-") as tmp:
        path = Path(tmp) / f"{unit.method}.mlpackage"
        with python_output_captured():
            mlmodel.save(str(path))
        (weights,) = package_weights(path).values()
    overrides, _ = graph_inputs_from_package(ep, weights)
    return overrides


def coreml_reference(unit: ExportUnit, recipe: Recipe, formulation: Formulation) -> Reference:
    ep = export_program(unit, formulation)
    half = recipe.precision == "fp16"
    compute = "float16 compute emulated" if half else "float32"
    if applies(recipe.quantization, unit.kind):
        overrides = compressed_weights(unit, ep, recipe)
        name = f"checkpoint weights through ct.convert + {recipe.quantization}, decoded, {compute} (PyTorch)"
    else:
        overrides = {}
        name = f"checkpoint weights, {compute} (PyTorch)"
    return Reference(name, lambda inputs: run_graph(ep, overrides, inputs, half))
