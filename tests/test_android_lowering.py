"""The Android writer lowers methods to XNNPACK one at a time (`targets/android/export.py lower_each`) so that a
constant several methods share is held once while the rest are lowered: the program must be the one a single
`to_edge_transform_and_lower` over every method makes, byte for byte, inline and with external weights."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from conftest import OPS

from elasticdit.checkpoint import load_checkpoint
from elasticdit.lowering import lower
from elasticdit.operating_points import select
from elasticdit.progress import Reporter
from elasticdit.recipes import load_recipe
from elasticdit.slicing import denoise_unit, export_units
from elasticdit.targets import TARGETS
from elasticdit.targets.android.export import lower_each, tag_weights_external


def programs(ckpt, recipe_name: str, external: bool) -> dict:
    """Fresh torch.export programs of two points and decode (lowering rewrites the programs it is given)."""
    target = TARGETS["android"]
    recipe = load_recipe(recipe_name, target, TARGETS)
    ck = load_checkpoint(ckpt)
    models = ck.models()
    units = export_units(models, select(ck.cfg, OPS.split(",")), [ck.cfg.resolution], recipe.attention)
    lowered = lower(models, units, recipe, target.formulation, Reporter(None, 1))
    found = dict(sorted((lu.method, lu.program) for lu in lowered))
    if external:
        for program in found.values():
            tag_weights_external(program)
    return found


def one_call(found: dict):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    config = EdgeCompileConfig(_check_ir_validity=False)
    return to_edge_transform_and_lower(found, partitioner=[XnnpackPartitioner()], compile_config=config)


def held_buffers(edge) -> tuple[set[str], set[int]]:
    """(keys of the named data every lowered method holds, ids of the buffer objects holding them)."""
    from executorch.exir.lowered_backend_module import LoweredBackendModule

    keys, ids = set(), set()
    for method in edge.methods:
        for module in edge.exported_program(method).graph_module.modules():
            if isinstance(module, LoweredBackendModule) and module.named_data_store_output is not None:
                store = module.named_data_store_output
                for entries in (store.pte_data, *store.external_data.values()):
                    for key, entry in entries.items():
                        keys.add(key)
                        ids.add(id(store.buffers[entry.buffer_index]))
    return keys, ids


@pytest.mark.parametrize(("recipe", "external"), [("android-8da4w", False), ("android-fp32", True)])
def test_methods_lowered_one_at_a_time_give_the_program_of_one_call(tiny_ckpt, tmp_path, recipe, external):
    from executorch.exir import ExecutorchBackendConfig

    each = lower_each(programs(tiny_ckpt, recipe, external))
    keys, ids = held_buffers(each)
    assert len(ids) == len(keys), (len(ids), len(keys))  # a shared constant: one buffer for every method
    reference = one_call(programs(tiny_ckpt, recipe, external))
    ref_keys, ref_ids = held_buffers(reference)
    assert keys == ref_keys
    assert len(ref_ids) > len(ref_keys)  # one call holds a copy per method: what lower_each avoids

    config = ExecutorchBackendConfig(extract_delegate_segments=True)
    mine, theirs = each.to_executorch(config), reference.to_executorch(config)
    assert mine.buffer == theirs.buffer
    if external:
        (tmp_path / "each").mkdir()
        (tmp_path / "one").mkdir()
        mine.write_tensor_data_to_file(str(tmp_path / "each"))
        theirs.write_tensor_data_to_file(str(tmp_path / "one"))
        assert (tmp_path / "each" / "model.ptd").read_bytes() == (tmp_path / "one" / "model.ptd").read_bytes()


def quantized_state(program) -> list[tuple[str, bytes]]:
    tensors = {**program.state_dict, **{k: v for k, v in program.constants.items() if isinstance(v, torch.Tensor)}}
    return [
        (k, v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()) for k, v in sorted(tensors.items())
    ]


def observed_by_a_forward(unit):
    """PT2E as its documentation spells it: prepare, a forward through the observed graph, convert, export."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    with torch.no_grad():
        graph = prepare_pt2e(torch.export.export(unit.module, unit.example_inputs).module(), quantizer)
        graph(*unit.example_inputs)
        return torch.export.export(convert_pt2e(graph), unit.example_inputs)


def test_pt2e_int8_observing_only_the_weights_gives_the_program_a_forward_gives(tiny_ckpt, monkeypatch):
    """pt2e-int8 runs no forward: activations are quantized at run time, so only the weights' observers record
    anything, and each is fed its weight. The program equals the forward-observed one (graph and every tensor);
    an observer fed a wrong tensor (the mutation) gives a different one, which is what this comparison catches."""
    import elasticdit.quant.xnnpack as xnnpack

    ck = load_checkpoint(tiny_ckpt)
    (point,) = select(ck.cfg, ["r2_d2"])
    unit = denoise_unit(ck.models(), point, ck.cfg.resolution, "tiles")
    reference = observed_by_a_forward(unit)
    program = xnnpack.pt2e_int8(unit.module, unit.example_inputs)
    assert str(program.graph) == str(reference.graph)
    assert quantized_state(program) == quantized_state(reference)
    assert any(v.dtype == torch.int8 for v in program.state_dict.values())

    feed = xnnpack.observe_weights

    def one_wrong(graph):  # mutation: the first weight observer sees half its weight
        node = next(n for n in graph.graph.nodes if n.op == "call_module" and n.args[0].op == "get_attr")
        observer = graph.get_submodule(node.target)
        seen = observer.forward
        observer.forward = lambda weight: seen(weight * 0.5)
        return feed(graph)

    monkeypatch.setattr(xnnpack, "observe_weights", one_wrong)
    assert quantized_state(xnnpack.pt2e_int8(unit.module, unit.example_inputs)) != quantized_state(reference)


def test_pt2e_int8_methods_share_their_equal_quantized_tensors(tiny_ckpt, monkeypatch):
    """Two points run the same blocks: their programs hold one int8 tensor per quantized weight, not one each, and
    every tensor equals the one the program has without sharing. Sharing by dtype and shape without the bytes (the
    mutation) hands one weight's int8 values to another, which this comparison catches."""
    import elasticdit.quant.xnnpack as xnnpack

    ck = load_checkpoint(tiny_ckpt)
    models = ck.models()
    units = [denoise_unit(models, p, ck.cfg.resolution, "tiles") for p in select(ck.cfg, OPS.split(","))]

    def programs(held):
        return [xnnpack.pt2e_int8(u.module, u.example_inputs, held) for u in units]

    separate = [quantized_state(p) for p in programs(None)]
    made: list = []
    share = xnnpack.share_tensors

    def noting(program, held):  # the tensors quantizing made, before sharing replaces some
        made.extend(weakref.ref(v) for v in program.state_dict.values() if v.dtype == torch.int8)
        return share(program, held)

    monkeypatch.setattr(xnnpack, "share_tensors", noting)
    shared = programs({})
    first, second = ({id(v) for v in p.state_dict.values() if v.dtype == torch.int8} for p in shared)
    assert first & second and len(first | second) < len(first) + len(second)
    assert [quantized_state(p) for p in shared] == separate
    gc.collect()  # a replaced tensor is freed: nothing else (the converted graph module) still holds it
    assert sum(r() is not None for r in made) == len(first | second)

    def by_shape(program, held):  # mutation: the key without the bytes
        for values in (program.state_dict, program.constants):
            for name, value in values.items():
                if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                    values[name] = held.setdefault((value.dtype, tuple(value.shape)), value)
        return 0

    monkeypatch.setattr(xnnpack, "share_tensors", by_shape)
    assert [quantized_state(p) for p in programs({})] != separate
