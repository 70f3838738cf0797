"""Writing the Android artifact: every lowered program as a method of one ExecuTorch program, lowered to XNNPACK
with `to_edge_transform_and_lower`; constants of equal content are stored once.

External weights (`export --weights external`) use ExecuTorch's program-data separation: every weight placeholder
is tagged before lowering (`node.meta["custom"]["delegate_constant_tag"]`, which XNNPACK's serializer reads to put
the packed constant in its named data under that tag instead of in the delegate blob). Everything tagged lands in
one `model.ptd` (FlatTensor), each constant once by content (XNNPACK keys its named data by sha256), whichever
methods use it; `model.pte` keeps the program and names the data it needs by key. Constants left outside the
delegate (the `tiles` core's gather indices, the text encoder's token table) stay in `model.pte`: ExecuTorch keys
external non-delegated constants by their name, and two methods' constants of one name but different shapes
(each point's gather indices) would collide in one data file (the method then fails to load, InvalidExternalData)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...errors import ExportError, first_line
from ...lowering import LoweredUnit
from ...progress import Reporter
from ...quiet import silence_library_noise
from ..base import Artifact

PTE = "model.pte"
DATA_TAG = "model"  # the external data's tag: ExecuTorch writes it as `model.ptd`
PTD = f"{DATA_TAG}.ptd"
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


def planned_arenas(program) -> dict[str, int]:
    """Per method, the bytes of the memory-planned buffers the runtime allocates to run it (the ExecuTorch
    program's `non_const_buffer_sizes`; index 0 is reserved). XNNPACK's own scratch and packed weights are not
    in it."""
    return {plan.name: int(sum(plan.non_const_buffer_sizes)) for plan in program.execution_plan}


def tag_weights_external(program: torch.export.ExportedProgram) -> int:
    """Mark every parameter, buffer and lifted constant of `program` for the external data file; returns how many."""
    sig = program.graph_signature
    names = {*sig.inputs_to_parameters, *sig.inputs_to_buffers, *sig.inputs_to_lifted_tensor_constants}
    count = 0
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in names:
            node.meta.setdefault("custom", {})["delegate_constant_tag"] = DATA_TAG
            count += 1
    return count


def runtime_ops(program) -> dict[str, tuple[str, ...]]:
    """{method: the operators its plan calls outside the delegates and outside `STOCK_NAMESPACES`}, by the
    runtime's names (`elasticdit::ssba_attention.out`), sorted."""
    found = {}
    for plan in program.executorch_program.execution_plan:
        names = {f"{op.name}.{op.overload}" if op.overload else op.name for op in plan.operators}
        found[plan.name] = tuple(sorted(n for n in names if n.partition("::")[0] not in STOCK_NAMESPACES))
    return found


def lower_each(programs: dict[str, torch.export.ExportedProgram], release: Callable[[], object] = lambda: None):
    """The methods lowered to XNNPACK one at a time (`to_edge_transform_and_lower` per method), gathered into one
    `EdgeProgramManager` as a single call over all of them would build it: the program is the same, byte for byte.

    Why one at a time: XNNPACK's serializer copies each constant a method uses into that method's named data
    (`bytes`), and one call held every method's copies, and its lowering temporaries, until the program was written
    (~0.4x the float bytes of each method at paper scale). Here a constant another method already holds (same key:
    its sha256) is replaced by that method's buffer as soon as a method is lowered, so a shared weight's copy is
    held once, as the program stores it. `release` runs after each method (the checkpoint pages its lowering read)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.exir.lowered_backend_module import LoweredBackendModule
    from executorch.exir.program._program import EdgeProgramManager

    config = EdgeCompileConfig(_check_ir_validity=False)
    held: dict[str, object] = {}
    edges = {}
    for method, program in programs.items():
        edge = to_edge_transform_and_lower({method: program}, partitioner=[XnnpackPartitioner()], compile_config=config)
        edges[method] = edge.exported_program(method)
        for module in edges[method].graph_module.modules():
            store = module.named_data_store_output if isinstance(module, LoweredBackendModule) else None
            if store is None:
                continue
            for entries in (store.pte_data, *store.external_data.values()):
                for key, entry in entries.items():
                    store.buffers[entry.buffer_index] = held.setdefault(key, store.buffers[entry.buffer_index])
        release()
    return EdgeProgramManager(edges, compile_config=config)


def write_program(
    lowered: list[LoweredUnit],
    folder: Path,
    report: Reporter,
    external: bool = False,
    release: Callable[[], object] = lambda: None,
) -> list[Artifact]:
    """Write model.pte (and with `external`, model.ptd) into folder; one Artifact per method, reporting what
    XNNPACK took and what it left. `release` runs after each method is lowered."""
    from executorch.exir import ExecutorchBackendConfig

    silence_library_noise()
    programs = {lu.method: lu.program for lu in lowered}
    if external:
        for program in programs.values():
            tag_weights_external(program)
    report.stage("lowering to XNNPACK")
    try:
        edge = lower_each(dict(sorted(programs.items())), release)  # the byte output depends on method order: canonical
        delegation = {m: delegation_of(edge.exported_program(m).graph_module) for m in programs}
        program = edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True))
    except Exception as exc:
        raise ExportError(f"lowering to XNNPACK failed: {type(exc).__name__}: {first_line(exc)}") from exc
    report.advance()
    with (folder / PTE).open("wb") as f:
        program.write_to_file(f)  # streamed: no second copy of the program in memory
    data_file = None
    if external:
        program.write_tensor_data_to_file(str(folder))
        written = sorted(p.name for p in folder.glob("*.ptd"))
        if written != [PTD]:
            raise ExportError(f"ExecuTorch wrote external data {written or 'none'}; expected one file, {PTD}")
        data_file = PTD
    arenas = planned_arenas(program.executorch_program)
    ops = runtime_ops(program)
    return [
        Artifact(
            lu.method,
            PTE,
            lu.unit.inputs,
            lu.unit.outputs,
            delegation[lu.method].to_dict(),
            data_file=data_file,
            arena_bytes=arenas.get(lu.method),
            runtime_ops=ops[lu.method],
        )
        for lu in lowered
    ]
