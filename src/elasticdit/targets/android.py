"""Android: one ExecuTorch program, a method per export unit, lowered to XNNPACK; weights stored once."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ExportError
from ..model.pipeline import Models
from ..progress import Reporter
from ..recipes import Recipe
from ..slicing import ExportUnit

PTE = "model.pte"


@dataclass
class Delegation:
    delegated_subgraphs: int = 0
    delegated_nodes: int = 0
    outside_nodes: int = 0
    outside_ops: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "delegated_subgraphs": self.delegated_subgraphs,
            "delegated_nodes": self.delegated_nodes,
            "outside_nodes": self.outside_nodes,
            "outside_ops": self.outside_ops,
        }


def delegation_of(graph_module: torch.fx.GraphModule) -> Delegation:
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    outside = Counter()
    for op, breakdown in info.delegation_by_operator.items():
        if breakdown.non_delegated:
            outside[op] += breakdown.non_delegated
    return Delegation(
        info.num_delegated_subgraphs,
        info.num_delegated_nodes,
        info.num_non_delegated_nodes,
        dict(sorted(outside.items())),
    )


def _quiet_executorch_logs() -> None:
    for name in ("executorch", "torch._export", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)


def export_program(unit: ExportUnit, recipe: Recipe, calibration) -> torch.export.ExportedProgram:
    if recipe.quantization == "pt2e-int8" and unit.kind == "denoise":
        from ..quant.xnnpack import pt2e_int8

        return pt2e_int8(unit.module, unit.example_inputs, calibration(unit))
    with torch.no_grad():
        return torch.export.export(unit.module, unit.example_inputs)


def write_android(
    units: list[ExportUnit], models: Models, recipe: Recipe, folder: Path, report: Reporter, calibration
) -> dict[str, dict]:
    """Write model.pte into folder; returns {method: {"file", "delegation"}}."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower

    _quiet_executorch_logs()
    if recipe.quantization == "8da4w":
        from ..quant.xnnpack import torchao_8da4w

        report.stage("quantizing the shared transformer (8da4w)")
        torchao_8da4w(models.transformer, recipe.group_size)
    programs = {}
    for unit in units:
        report.stage(f"torch.export {unit.method}")
        try:
            programs[unit.method] = export_program(unit, recipe, calibration)
        except Exception as exc:  # torch.export raises many types; name the method and the cause
            raise ExportError(
                f"torch.export of {unit.method} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            ) from exc
        report.advance()
    report.stage("lowering to XNNPACK")
    try:
        edge = to_edge_transform_and_lower(
            dict(sorted(programs.items())),  # the byte output depends on method order: keep it canonical
            partitioner=[XnnpackPartitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False),
        )
        delegation = {m: delegation_of(edge.exported_program(m).graph_module) for m in programs}
        program = edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True))
    except Exception as exc:
        raise ExportError(
            f"lowering to XNNPACK failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        ) from exc
    report.advance()
    (folder / PTE).write_bytes(program.buffer)
    return {m: {"file": PTE, "delegation": delegation[m].to_dict()} for m in programs}
