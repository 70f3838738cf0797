"""The lowering stage, between slicing and the targets: every method as a torch.export program in the layer
formulation its target chose, quantized as the recipe says.

Choices made once per target (`Target.formulation`), like the attention core a recipe names:

- means: the shared layers spell a mean over the last dim as `F.linear(x, avg)` with a constant [1, D] vector of
  1/D (`model/layers.py`), which XNNPACK delegates whole (`"matmul"`); Core ML wants the plain reduction
  (`"reduction"`: each such linear becomes `aten.mean.dim(x, [-1], keepdim=True)` after export, because
  coremltools 9.0's `fuse_linear_bias` pass crashes on that linear followed by a scalar add);
- decompose: `run_decompositions({})` (the core ATen opset) before the target converts the program (Core ML),
  then every `aten.alias` (a no-op view, which Core ML cannot convert) replaced by its input;
- norms: LayerNorm/RMSNorm as written (`"plain"`) or row-scaled so float16 compute cannot overflow their squares
  (`"fp16_safe"`, `model.layers.fp16_safe_norms`: Core ML, whose fp16 recipes compute in float16; the same maths,
  a few more elementwise ops per norm, and no float32 island that would split the Neural Engine's work).

The target then writes artifacts from the programs (`Target.write`); `verify` rebuilds the same program here.

Order: the exporter counts each point's cost (a batch-1 forward) on the float units before lowering them. The
`tiles` core caches its index tensors per (batch, sequence) on its first forward, so batch-1 programs see them
as constants already made, while a CFG bundle's batch-2 programs make them while tracing. Both programs are
correct; this order is what every bundle so far was written with, so their bytes stay the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import ExportError, first_line
from .model.layers import fp16_safe_norms
from .model.pipeline import Models
from .progress import Reporter
from .quant import applies, scheme
from .recipes import Recipe
from .slicing import ExportUnit


@dataclass(frozen=True)
class Formulation:
    means: str = "matmul"  # "matmul" | "reduction"
    decompose: bool = False
    norms: str = "plain"  # "plain" | "fp16_safe"

    def tracing(self) -> contextlib.AbstractContextManager:
        """The context the units are traced in: the norms' spelling."""
        return fp16_safe_norms() if self.norms == "fp16_safe" else contextlib.nullcontext()


@dataclass
class LoweredUnit:
    unit: ExportUnit
    program: torch.export.ExportedProgram
    quantize: bool  # an artifact-stage scheme applies to this method: the target runs it after converting

    @property
    def method(self) -> str:
        return self.unit.method


def means_as_reductions(ep: torch.export.ExportedProgram) -> int:
    """`F.linear(x, avg)` with a constant [1, D] vector of 1/D -> `mean(x, -1, keepdim=True)`; returns how many."""
    gm = ep.graph_module
    values = {**ep.state_dict, **ep.constants}
    consts = {s.arg.name: values.get(s.target) for s in ep.graph_signature.input_specs if s.target is not None}
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default or len(node.args) != 2:
            continue
        w = consts.get(getattr(node.args[1], "name", None))
        if w is None or w.dim() != 2 or w.shape[0] != 1 or not bool(torch.all(w == 1.0 / w.shape[1])):
            continue
        with gm.graph.inserting_before(node):
            mean = gm.graph.call_function(torch.ops.aten.mean.dim, (node.args[0], [-1], True))
        mean.meta = dict(node.meta)
        node.replace_all_uses_with(mean)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.lint()
    gm.recompile()
    return count


def drop_aliases(ep: torch.export.ExportedProgram) -> int:
    """`aten.alias` (what decomposing a no-op view leaves, e.g. `bias[:n, :n]` of an n x n buffer) -> its input;
    returns how many. Core ML's converter has no alias op; a graph without one is left untouched (same code)."""
    gm = ep.graph_module
    aliases = [n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.alias.default]
    for node in aliases:
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    if aliases:
        gm.graph.lint()
        gm.recompile()
    return len(aliases)


def formulate(ep: torch.export.ExportedProgram, formulation: Formulation) -> torch.export.ExportedProgram:
    if formulation.decompose:
        with torch.no_grad():
            ep = ep.run_decompositions({})
        drop_aliases(ep)
    if formulation.means == "reduction":
        means_as_reductions(ep)
    return ep


def export_program(unit: ExportUnit, formulation: Formulation) -> torch.export.ExportedProgram:
    """torch.export of one unit in the target's formulation (export and `verify` both build it here)."""
    try:
        with torch.no_grad(), formulation.tracing():
            ep = torch.export.export(unit.module, unit.example_inputs)
    except Exception as exc:  # torch.export raises many types; name the method and the cause
        raise ExportError(f"torch.export of {unit.method} failed: {type(exc).__name__}: {first_line(exc)}") from exc
    return formulate(ep, formulation)


def lower(
    models: Models,
    units: list[ExportUnit],
    recipe: Recipe,
    formulation: Formulation,
    report: Reporter,
    release: Callable[[], object] | None = None,
) -> list[LoweredUnit]:
    """Every unit (`slicing.export_units`) as a program. A module-stage scheme quantizes copies of the units
    and of the transformer they share (the float ones are left as they were); a program-stage scheme replaces
    torch.export for the methods it applies to, the methods sharing the equal tensors it makes. `release` drops
    float weights a scheme has read and replaced from the resident set (the checkpoint's `release_pages`)."""
    chosen = scheme(recipe.quantization)
    if chosen is not None and chosen.stage == "module":
        report.stage(f"quantizing the shared transformer ({recipe.quantization})")
        units = chosen.run(models, units, recipe, release)
    held: dict[tuple, torch.Tensor] = {}
    lowered = []
    for unit in units:
        quantize = applies(recipe.quantization, unit.kind)
        report.stage(f"torch.export {unit.method}")
        if quantize and chosen is not None and chosen.stage == "program":
            try:
                with formulation.tracing():
                    traced = chosen.run(unit.module, unit.example_inputs, held)
                program = formulate(traced, formulation)
                if release is not None:
                    release()
            except Exception as exc:
                raise ExportError(
                    f"torch.export of {unit.method} failed: {type(exc).__name__}: {first_line(exc)}"
                ) from exc
        else:
            program = export_program(unit, formulation)
        lowered.append(LoweredUnit(unit, program, quantize and chosen is not None and chosen.stage == "artifact"))
        report.advance()
    return lowered
