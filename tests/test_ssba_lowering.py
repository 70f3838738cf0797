"""Every SSBA lowering equals the masked reference: in eager, through ExecuTorch and through ONNX Runtime."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elasticdit.ssba.cores import DenseAttention
from elasticdit.ssba.lowering import lowering_names, make_core
from elasticdit.ssba.pattern import compile_pattern
from elasticdit.ssba.tiles import window_groups

TOL = 2e-6  # float32 rounding of a softmax over <= a few hundred keys, values ~N(0, 1)


@st.composite
def layers(draw):
    tile = draw(st.sampled_from([1, 2, 3, 4]))
    grid = (tile * draw(st.integers(1, 7)), tile * draw(st.integers(1, 7)))  # square or not, smaller than window too
    return dict(
        grid=grid,
        tile=tile,
        window=draw(st.integers(0, 2)),
        shifted=draw(st.booleans()),
        text_len=draw(st.integers(0, 6)),
        batch=draw(st.integers(1, 2)),
        heads=draw(st.integers(1, 3)),
        head_dim=draw(st.sampled_from([4, 8, 16])),
        seed=draw(st.integers(0, 2**16)),
    )


def qkv(case):
    g = torch.Generator().manual_seed(case["seed"])
    s = case["grid"][0] * case["grid"][1] + case["text_len"]
    return tuple(torch.randn(case["batch"] * case["heads"], s, case["head_dim"], generator=g) for _ in range(3))


def pattern_of(case):
    return compile_pattern(case["grid"], case["tile"], case["window"], case["shifted"], case["text_len"])


@settings(max_examples=150, deadline=None)
@given(layers(), st.sampled_from(["tiles", "slices"]))
def test_lowering_equals_masked(case, kind):
    pattern, (q, k, v) = pattern_of(case), qkv(case)
    ref = make_core("masked", case["head_dim"], pattern)(q, k, v)
    out = make_core(kind, case["head_dim"], pattern)(q, k, v)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=TOL)


def test_registry_has_the_lowerings_and_dense_patterns_run_plain_attention():
    assert {"dense", "masked", "tiles", "slices", "kernel"} <= set(lowering_names())
    dense_pattern = compile_pattern((8, 8), 4, 1, True, 3)  # 2x2 tiles fit one 3x3 window
    assert dense_pattern.is_dense
    assert isinstance(make_core("tiles", 8, dense_pattern), DenseAttention)
    assert isinstance(make_core("slices", 8, dense_pattern), DenseAttention)
    with pytest.raises(ValueError, match="unknown attention lowering 'bogus'"):
        make_core("bogus", 8, dense_pattern)


def test_window_groups_share_edge_windows():
    pattern = compile_pattern((64, 64), 8, 1, False, 77)  # 8x8 tiles: 6 window starts per axis
    groups = window_groups(pattern)
    assert sum(m for m, _, _ in groups) == 64 and len(groups) == 36
    assert sorted(t for _, tiles, _ in groups for t in tiles) == list(range(64))
    assert {m for m, _, _ in groups} == {1, 2, 4}  # inner tiles, edge pairs, corner quads


EXPORT_CASES = [
    dict(grid=(16, 16), tile=4, window=1, shifted=True, text_len=5, batch=1, heads=2, head_dim=8, seed=1),
    dict(grid=(8, 20), tile=4, window=1, shifted=False, text_len=3, batch=2, heads=1, head_dim=16, seed=2),
    dict(grid=(12, 12), tile=2, window=2, shifted=True, text_len=4, batch=1, heads=2, head_dim=8, seed=3),
]


class _Core(torch.nn.Module):
    def __init__(self, core):
        super().__init__()
        self.core = core

    def forward(self, q, k, v):
        return self.core(q, k, v)


@pytest.mark.parametrize("case", EXPORT_CASES, ids=lambda c: f"{c['grid'][0]}x{c['grid'][1]}-shift{int(c['shifted'])}")
@pytest.mark.parametrize("kind", ["tiles", "slices"])
def test_lowering_through_executorch_runtime(case, kind, tmp_path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    pattern, inputs = pattern_of(case), qkv(case)
    ref = make_core("masked", case["head_dim"], pattern)(*inputs)
    program = torch.export.export(_Core(make_core(kind, case["head_dim"], pattern)).eval(), inputs, strict=False)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    path = tmp_path / "attn.pte"
    path.write_bytes(edge.to_executorch().buffer)
    method = Runtime.get().load_program(path).load_method("forward")
    (out,) = method.execute(list(inputs))
    torch.testing.assert_close(out, ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("case", EXPORT_CASES[:2], ids=["square", "wide"])
@pytest.mark.parametrize("kind", ["tiles", "slices"])
def test_lowering_through_onnx_runtime(case, kind, tmp_path):
    import onnxruntime as ort

    pattern, inputs = pattern_of(case), qkv(case)
    ref = make_core("masked", case["head_dim"], pattern)(*inputs)
    path = tmp_path / "attn.onnx"
    core = _Core(make_core(kind, case["head_dim"], pattern)).eval()
    torch.onnx.export(core, inputs, str(path), input_names=["q", "k", "v"], dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {n: t.numpy() for n, t in zip(["q", "k", "v"], inputs, strict=True)})
    np.testing.assert_allclose(out, ref.numpy(), rtol=0, atol=TOL)


@pytest.mark.parametrize("kind", ["tiles", "slices"])
def test_demo_operating_point_with_lowering_equals_masked(kind):
    from elasticdit.checkpoint import load_checkpoint
    from elasticdit.demo_checkpoint import demo_checkpoint_path
    from elasticdit.operating_points import operating_points

    checkpoint = load_checkpoint(demo_checkpoint_path())
    cfg, models = checkpoint.cfg, checkpoint.models()
    point = next(p for p in operating_points(cfg) if p.ratio == 1 and len(p.blocks) == cfg.transformer.num_blocks)
    g = torch.Generator().manual_seed(0)
    t, (lh, lw) = cfg.transformer, cfg.latent_size()
    args = (
        torch.randn(2, t.in_channels, lh, lw, generator=g),
        torch.rand(2, generator=g),
        torch.randn(2, t.text_len, t.text_dim, generator=g),
        torch.randn(2, t.pooled_dim, generator=g),
    )
    with torch.no_grad():
        ref = models.transformer.operating_point(point, attention="masked")(*args)
        net = models.transformer.operating_point(point, attention=kind)
        assert any(type(c).__name__ != "MaskedAttention" for c in net.modules() if hasattr(c, "pattern"))
        out = net(*args)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
