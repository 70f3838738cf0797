"""Writing the Android artifact: every lowered program as a method of one ExecuTorch program, lowered to XNNPACK
with `to_edge_transform_and_lower`; constants of equal content are stored once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import ExportError, first_line
from ...lowering import LoweredUnit
from ...progress import Reporter
from ...quiet import silence_library_noise
from ..base import Artifact

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


def write_program(lowered: list[LoweredUnit], folder: Path, report: Reporter) -> list[Artifact]:
    """Write model.pte into folder; one Artifact per method, reporting what XNNPACK took and what it left."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower

    silence_library_noise()
    programs = {lu.method: lu.program for lu in lowered}
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
        raise ExportError(f"lowering to XNNPACK failed: {type(exc).__name__}: {first_line(exc)}") from exc
    report.advance()
    (folder / PTE).write_bytes(program.buffer)
    return [
        Artifact(lu.method, PTE, lu.unit.inputs, lu.unit.outputs, delegation[lu.method].to_dict()) for lu in lowered
    ]
