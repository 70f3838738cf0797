"""The Android writer lowers methods to XNNPACK one at a time (`targets/android/export.py lower_each`) so that a
constant several methods share is held once while the rest are lowered: the program must be the one a single
`to_edge_transform_and_lower` over every method makes, byte for byte, inline and with external weights."""

from __future__ import annotations

import pytest
import torch
from conftest import OPS

from elasticdit.checkpoint import load_checkpoint
from elasticdit.lowering import lower
from elasticdit.operating_points import select
from elasticdit.progress import Reporter
from elasticdit.recipes import load_recipe
from elasticdit.slicing import export_units
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


def test_pt2e_int8_does_not_depend_on_the_inputs_its_observers_see(tiny_ckpt, monkeypatch):
    """pt2e-int8 takes no calibration samples: activations are quantized at run time, so only the weights'
    observers record anything. Two different inputs give the same program; under a static (calibrated) config
    they would not, which is what this comparison catches."""
    import executorch.backends.xnnpack.quantizer.xnnpack_quantizer as xq

    from elasticdit.quant.xnnpack import pt2e_int8

    ck = load_checkpoint(tiny_ckpt)
    models = ck.models()
    (unit,) = [u for u in export_units(models, select(ck.cfg, ["r2_d2"]), [ck.cfg.resolution], "tiles") if u.point]
    gen = torch.Generator().manual_seed(0)
    other = tuple(torch.randn(x.shape, generator=gen) if x.is_floating_point() else x for x in unit.example_inputs)
    probe = tuple(torch.randn(x.shape, generator=gen) if x.is_floating_point() else x for x in unit.example_inputs)

    def program_and_output(inputs):
        program = pt2e_int8(unit.module, inputs)
        return quantized_state(program), program.module()(*probe)

    (state_a, out_a), (state_b, out_b) = program_and_output(unit.example_inputs), program_and_output(other)
    assert state_a == state_b and len(state_a) > 0
    assert torch.equal(out_a, out_b)

    static = xq.get_symmetric_quantization_config
    monkeypatch.setattr(  # mutation: activations calibrated on what the forward sees
        xq, "get_symmetric_quantization_config", lambda **kw: static(**{**kw, "is_dynamic": False})
    )
    (state_c, out_c), (state_d, out_d) = program_and_output(unit.example_inputs), program_and_output(other)
    assert state_c != state_d or not torch.equal(out_c, out_d)
