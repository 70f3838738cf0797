"""Running an iOS bundle's methods. Core ML cannot run on Linux: there the package's structure is checked against
the manifest, and each method's numerics come from the exact torch graph that went into `ct.convert` (rebuilt by
the lowering stage), fed with the weights decoded from the package's weight.bin and run in float16 for fp16
recipes. On macOS the Core ML functions themselves run."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...chunking import rebuilt_piece_unit, run_chain
from ...errors import BundleError
from ...lowering import export_program
from ...slicing import ExportUnit, decode_unit, denoise_unit, encode_text_unit
from ...specs import MethodKind
from .convert import DTYPES, graph_digest
from .ct import coremltools
from .package import check_package, package_weights

MACOS_NOTE = "running the Core ML functions needs macOS"


def fp32_island(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The FX nodes `convert` keeps in fp32 (see `keeps_fp32`): sin/cos and what feeds only them."""
    keep: set[torch.fx.Node] = set()
    for node in reversed(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in (torch.ops.aten.sin.default, torch.ops.aten.cos.default) or (
            node.users and all(user in keep for user in node.users)
        ):
            keep.add(node)
    return keep


class _Fp16Emulation(torch.fx.Interpreter):
    """Runs a graph the way Core ML's fp16 compute precision does: every float op in float16, except the
    fp32 island; float constants enter each op as stored (so fp16-cast weights are already rounded)."""

    def __init__(self, module: torch.fx.GraphModule):
        super().__init__(module)
        self.fp32 = fp32_island(module.graph)

    def run_node(self, n: torch.fx.Node):
        if n.op != "call_function":
            return super().run_node(n)
        dtype = torch.float32 if n in self.fp32 else torch.float16
        args, kwargs = self.fetch_args_kwargs_from_env(n)

        def cast(value):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value.to(dtype)
            if value is torch.float32:  # dtype= arguments (casts, factories)
                return dtype
            return value

        args, kwargs = torch.utils._pytree.tree_map(cast, (args, kwargs))
        return n.target(*args, **kwargs)


def run_graph(
    ep: torch.export.ExportedProgram, overrides: dict[str, torch.Tensor], inputs: list[torch.Tensor], half: bool
) -> list[torch.Tensor]:
    """Run the program's graph with parameters/buffers replaced by `overrides` (FQN -> tensor); `half`
    emulates Core ML's fp16 compute precision. Results are float32."""
    graph = copy.deepcopy(ep.module())  # never write into the checkpoint's shared parameters
    for fqn, value in overrides.items():
        owner, _, name = fqn.rpartition(".")
        holder = graph.get_submodule(owner) if owner else graph
        old = getattr(holder, name)
        setattr(holder, name, torch.nn.Parameter(value, False) if isinstance(old, torch.nn.Parameter) else value)
    examples = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"][-len(inputs) :]
    args = [t.to(e.dtype) if e is not None else t for t, e in zip(inputs, examples, strict=True)]
    with torch.no_grad():
        out = _Fp16Emulation(graph).run(*args) if half else graph(*args)
    out = list(out) if isinstance(out, tuple | list) else [out]
    return [o.float() for o in out]


def graph_inputs_from_package(
    ep: torch.export.ExportedProgram, weights: dict[str, np.ndarray]
) -> tuple[dict[str, torch.Tensor], int]:
    """Parameters and buffers of the program replaced by the package's values where a const maps to them
    (by placeholder name and shape); returns the overrides by FQN and how many of the program's tensors
    were found in the package."""
    values = {**ep.state_dict, **ep.constants}
    overrides = {}
    for s in ep.graph_signature.input_specs:
        if s.target is None or s.target not in values:
            continue
        found = weights.get(s.arg.name)
        if found is not None and list(found.shape) == list(values[s.target].shape):
            overrides[s.target] = torch.from_numpy(np.ascontiguousarray(found)).to(values[s.target].dtype)
    return overrides, len(overrides)


def rebuild_unit(models: Any, manifest: Any, entry: Any) -> ExportUnit:
    """The unit the exporter converted for this manifest entry, rebuilt from the checkpoint."""
    resolution, default = entry.resolution or manifest.resolution, manifest.resolution
    if entry.kind == MethodKind.DENOISE:
        return denoise_unit(models, entry.point, resolution, manifest.recipe.attention, entry.batch, default)
    if entry.kind == MethodKind.DECODE:
        return decode_unit(models, resolution, default)
    return encode_text_unit(models)


class PackageGraphRunner:
    """Linux: each method as the torch graph given to ct.convert, with the package's weights; a chunked point as its
    pieces' graphs, chained (`chunking.run_chain`)."""

    def __init__(self, bundle: Path, manifest: Any, models: Any, formulation: Any):
        self.packages = check_package(bundle, manifest)
        self.manifest, self.models, self.formulation = manifest, models, formulation
        self.precision = manifest.recipe.precision
        self.weights = {fn: w for pkg in self.packages.values() for fn, w in package_weights(pkg).items()}
        self.found: dict[str, int] = {}
        self.programs: dict[str, tuple[Any, dict[str, torch.Tensor]]] = {}

    def run(self, entry: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        unit = rebuild_unit(self.models, self.manifest, entry)
        if getattr(entry, "chunks", None):
            attention = self.manifest.recipe.attention

            def piece(chunk: Any, values: list[torch.Tensor]) -> list[torch.Tensor]:
                return self.run_unit(rebuilt_piece_unit(self.models, unit, chunk, attention), values)

            found = self.found
            result = run_chain(entry, inputs, piece)
            found[entry.method] = sum(found.get(c.function, 0) for c in entry.chunks)
            return result
        return self.run_unit(unit, inputs)

    def run_piece(self, entry: Any, chunk: Any, unit: ExportUnit, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """One piece of a chunked point (`unit`: the piece rebuilt with the recipe's attention)."""
        return self.run_unit(unit, inputs)

    def run_unit(self, unit: ExportUnit, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        method = unit.method
        if method not in self.programs:  # rebuilt once per method (verify runs each at several noise levels)
            ep = export_program(unit, self.formulation)
            want = (self.manifest.backend_report.get(method) or {}).get("graph_sha256")
            if want and graph_digest(ep) != want:
                raise BundleError(
                    f"the graph rebuilt for {method} differs from the one converted at export (sha256 "
                    f"{graph_digest(ep)[:12]} != {want[:12]}); its numerics cannot be checked with this tool version"
                )
            overrides, self.found[method] = graph_inputs_from_package(ep, self.weights[method])
            self.programs[method] = ep, overrides
        ep, overrides = self.programs[method]
        return run_graph(ep, overrides, inputs, half=self.precision == "fp16")

    def note(self, entry: Any) -> str:
        compute = "float16 (Core ML fp16 compute, emulated on CPU)" if self.precision == "fp16" else "float32"
        found = self.found.get(entry.method, 0)
        chunks = getattr(entry, "chunks", None) or []
        files = ", ".join(dict.fromkeys(c.file for c in chunks)) or entry.file
        chained = f"{len(chunks)} pieces' graphs, chained," if chunks else "the torch.export graph"
        return (
            f"Linux: ran {chained} given to ct.convert in {compute} with {found} weight tensors decoded from {files}; "
            f"{MACOS_NOTE}"
        )


class CoreMLRunner:  # pragma: no cover - macOS only
    """Run each function with Core ML itself (CPU, GPU and Neural Engine as Core ML chooses); a chunked point's
    pieces chained (untested here: Core ML runs only on Apple platforms)."""

    def __init__(self, bundle: Path, packages: dict[str, Path]):
        self.bundle, self.packages, self.ct = bundle, packages, coremltools()
        self.loaded: dict[tuple[str, str], Any] = {}

    def call(self, file: str, function: str, specs: Any, outputs: Any, inputs: list[torch.Tensor]) -> list:
        if (file, function) not in self.loaded:
            self.loaded[file, function] = self.ct.models.MLModel(str(self.bundle / file), function_name=function)
        feeds = {spec.name: t.numpy().astype(DTYPES[spec.dtype]) for spec, t in zip(specs, inputs, strict=True)}
        result = self.loaded[file, function].predict(feeds)
        return [torch.from_numpy(np.asarray(result[s.name], dtype=np.float32)) for s in outputs]

    def run_piece(self, entry: Any, chunk: Any, unit: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.call(chunk.file, chunk.function, chunk.inputs, chunk.outputs, inputs)

    def run(self, entry: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if getattr(entry, "chunks", None):
            return run_chain(
                entry, inputs, lambda c, values: self.call(c.file, c.function, c.inputs, c.outputs, values)
            )
        return self.call(entry.file, entry.method, entry.inputs, entry.outputs, inputs)

    def note(self, entry: Any) -> str:
        chunks = getattr(entry, "chunks", None) or []
        if chunks:
            return f"macOS: ran Core ML functions {', '.join(c.function for c in chunks)}, chained"
        return f"macOS: ran Core ML function {entry.method} of {entry.file}"


def host_runner(bundle: Path, manifest: Any, models: Any, formulation: Any) -> Any:
    if sys.platform == "darwin":  # pragma: no cover - needs the Core ML framework
        return CoreMLRunner(bundle, check_package(bundle, manifest))
    return PackageGraphRunner(bundle, manifest, models, formulation)
