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
# The operator namespaces every ExecuTorch runtime registers: its portable (and optimized) kernels and its
# primitive ops. An op of any other namespace outside the delegates comes from a kernel library the app's
# runtime must link (elasticdit's SSBA kernel, ExecuTorch's quantized or LLM kernels): a runtime op.
STOCK_NAMESPACES = frozenset({"aten", "dim_order_ops", "et_copy", "executorch_prim"})


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


def runtime_ops(program) -> dict[str, tuple[str, ...]]:
    """{method: the operators its plan calls outside the delegates and outside `STOCK_NAMESPACES`}, by the
    runtime's names (`elasticdit::ssba_attention.out`), sorted."""
    found = {}
    for plan in program.executorch_program.execution_plan:
        names = {f"{op.name}.{op.overload}" if op.overload else op.name for op in plan.operators}
        found[plan.name] = tuple(sorted(n for n in names if n.partition("::")[0] not in STOCK_NAMESPACES))
    return found


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
    ops = runtime_ops(program)
    return [
        Artifact(lu.method, PTE, lu.unit.inputs, lu.unit.outputs, delegation[lu.method].to_dict(), ops[lu.method])
        for lu in lowered
    ]
