"""Android quantization: PT2E int8 (XNNPACKQuantizer) and torchao 8da4w, both lowered by XNNPACK.

Weight-only int8 is not offered: XNNPACK leaves `dequantize_affine` outside (or, with the default
partitioner, drops the weight scale and returns wrong numbers).
"""

from __future__ import annotations

import copy
import hashlib
import operator
from collections.abc import Callable

import torch
from torch import nn

from ..model.elastic_dit import OUTPUT_PROJECTION
from ..model.pipeline import Models
from ..recipes import Recipe
from ..slicing import ExportUnit


def pt2e_int8(
    module: nn.Module, example: tuple[torch.Tensor, ...], held: dict[tuple, torch.Tensor] | None = None
) -> torch.export.ExportedProgram:
    """Symmetric per-channel int8 weights, dynamic int8 activations; returns the quantized program.

    Nothing is calibrated and nothing runs forward: the activations are quantized at run time, so the prepared
    graph's only observers that record anything are the weights' (per-channel min/max), and each is fed its weight
    (`observe_weights`). A forward on any input gives the same program (tests/test_android_lowering.py); at paper
    scale it cost a minute and its activations at 4096 tokens per method. `held`, shared across the methods of one
    export, makes equal quantized tensors one tensor (`share_tensors`): every method quantizes the same blocks."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    with torch.no_grad():
        graph = torch.export.export(module, example).module()
        graph = prepare_pt2e(graph, quantizer)
        observe_weights(graph)
        graph = convert_pt2e(graph)
        program = torch.export.export(graph, example)
    # The converted module outlives this call, and with it the tensors it was exported from, which share_tensors is
    # about to replace: nothing reachable from Python holds it (torch 2.13, torchao 0.18; gc.collect does not free
    # it), so its tensors are dropped here. Without this every method kept its own int8 copy (tests).
    graph._buffers.clear()
    if held is not None:
        share_tensors(program, held)
    return program


def observe_weights(graph: torch.fx.GraphModule) -> int:
    """Calls every observer whose input is a stored tensor (a weight) on that tensor; returns how many."""
    from torchao.quantization.pt2e import ObserverBase

    count = 0
    for node in graph.graph.nodes:
        if node.op != "call_module" or not isinstance(graph.get_submodule(node.target), ObserverBase):
            continue
        (source, *_) = node.args
        if isinstance(source, torch.fx.Node) and source.op == "get_attr":
            graph.get_submodule(node.target)(operator.attrgetter(source.target)(graph))
            count += 1
    return count


def share_tensors(program: torch.export.ExportedProgram, held: dict[tuple, torch.Tensor]) -> int:
    """Replaces each of the program's tensors that quantizing made (not a parameter: those the float modules
    share already) by an equal one in `held` (dtype, shape, sha256 of the bytes), adding the ones it has not seen;
    returns how many were replaced. Without it each method held its own int8 copy of every block it runs: 156
    block instances for the 24 blocks of the paper-scale model's 9 points."""
    replaced = 0
    for values in (program.state_dict, program.constants):
        for name, value in values.items():
            if not isinstance(value, torch.Tensor) or isinstance(value, nn.Parameter):
                continue
            data = value.detach().contiguous()
            key = (data.dtype, tuple(data.shape), hashlib.sha256(data.view(-1).view(torch.uint8).numpy()).digest())
            kept = held.setdefault(key, value)
            if kept is not value:
                values[name] = kept
                replaced += 1
    return replaced


def torchao_8da4w(
    models: Models, units: list[ExportUnit], recipe: Recipe, release: Callable[[], object] | None = None
) -> list[ExportUnit]:
    """Copies of `units` whose shared transformer is a copy quantized once (`quantize_8da4w`), so every denoise
    method shares the quantized weights; the float models and units stay as they were, so what is computed from
    them (GFLOPs, decode and encode_text) does not depend on when this runs.

    The copies are of the modules, not of their tensors: every parameter and buffer is shared with the float
    modules (quantizing replaces a copied Linear's weight by a new tensor and mutates none), so the float weights
    are never held twice (a deep copy of the tensors held them twice before quantizing: 2x the float weights at
    the peak, 15.4 GiB at paper scale). `release` (the checkpoint's `release_pages`) runs after each block is
    quantized: the float weights it read need not stay resident."""
    modules = [models.transformer, *(u.module for u in units)]
    shared = {id(t): t for m in modules for t in (*m.parameters(), *m.buffers())}
    transformer, copies = copy.deepcopy((models.transformer, units), shared)  # one copy: the units keep sharing it
    quantize_8da4w(transformer, recipe.group_size, release)
    return copies


def quantize_8da4w(module: nn.Module, group_size: int, after_each: Callable[[], object] | None = None) -> int:
    """int4 weights in groups, dynamic int8 activations, on every Linear whose width the group divides; the
    output projections (`proj_out`, `proj_out_r{r}`), whose error goes straight into the velocity, get int8
    weights instead (on the velocity-predicting trained demo dc0534d5: 17.7-19.3 dB SNR with them in int4,
    22.9-24.8 dB in int8).

    Quantizes in place, once, so every method built from this module shares the quantized weights, one group of
    Linears at a time (a transformer block, or a top-level module), `after_each` called after each group.
    Returns the number of Linears quantized.
    """
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup, quantize_

    linears = {
        name: m for name, m in module.named_modules() if isinstance(m, nn.Linear) and m.in_features % group_size == 0
    }
    groups: dict[str, dict[str, nn.Linear]] = {}
    for name, m in linears.items():
        parts = name.split(".")
        key = ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]
        groups.setdefault(key, {})[name] = m
    for group in groups.values():
        # XNNPACK takes group-wise scales for 4-bit weights only: int8 weights are per output channel
        for bits, granularity, output in ((torch.int8, PerAxis(0), True), (torch.int4, PerGroup(group_size), False)):
            chosen = {id(m) for name, m in group.items() if name.split(".")[-1].startswith(OUTPUT_PROJECTION) == output}
            if chosen:
                quantize_(
                    module,
                    Int8DynamicActivationIntxWeightConfig(weight_dtype=bits, weight_granularity=granularity),
                    filter_fn=lambda m, _fqn, chosen=chosen: id(m) in chosen,
                )
        if after_each is not None:
            after_each()
    return len(linears)
