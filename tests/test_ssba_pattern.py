"""The SSBA mask follows the rules of docs/design.md, checked against a token-by-token construction of them."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from elasticdit.ssba.cores import DenseAttention, MaskedAttention
from elasticdit.ssba.pattern import block_is_shifted, compile_pattern


def rule_mask(gh, gw, tile, window, shifted):
    """The rules of docs/design.md written out literally, one (query, key) pair at a time."""
    s = tile // 2 if shifted else 0
    nth, ntw = gh // tile, gw // tile

    def tile_of(y, x):
        return ((y - s) % gh) // tile, ((x - s) % gw) // tile

    def window_of(a, n):
        span = min(2 * window + 1, n)
        start = min(max(a - window, 0), n - span)
        return range(start, start + span)

    n = gh * gw
    mask = np.zeros((n, n), dtype=bool)
    for q in range(n):
        qa, qb = tile_of(*divmod(q, gw))
        rows, cols = window_of(qa, nth), window_of(qb, ntw)
        for k in range(n):
            ka, kb = tile_of(*divmod(k, gw))
            mask[q, k] = ka in rows and kb in cols
    return mask


grids = st.tuples(st.integers(1, 5), st.integers(1, 5), st.sampled_from([1, 2, 4]))


@settings(max_examples=40, deadline=None)
@given(grids, st.integers(0, 2), st.booleans(), st.integers(0, 5))
def test_mask_matches_rules(tiles_and_size, window, shifted, text_len):
    nth, ntw, tile = tiles_and_size
    gh, gw = nth * tile, ntw * tile
    p = compile_pattern((gh, gw), tile, window, shifted, text_len)
    expected = rule_mask(gh, gw, tile, window, shifted)
    assert np.array_equal(p.image_mask(), expected)
    joint = p.joint_mask()
    n = gh * gw
    assert joint[n:, :].all() and joint[:, n:].all()  # text is global both ways
    # every query tile sees the same number of tiles, hence every query the same number of image keys
    per_query = expected.sum(1)
    assert (per_query == per_query[0]).all()
    span_h, span_w = min(2 * window + 1, nth), min(2 * window + 1, ntw)
    assert per_query[0] == span_h * span_w * tile * tile
    # sparsity = skipped pairs / all pairs, by its definition
    assert p.image_sparsity == pytest.approx(1 - expected.sum() / n**2)
    assert p.joint_sparsity == pytest.approx((~joint).sum() / joint.size)


def test_shift_alternates_with_block_parity():
    assert [block_is_shifted(i, "odd_blocks") for i in range(4)] == [False, True, False, True]
    assert not any(block_is_shifted(i, "none") for i in range(4))
    a = compile_pattern((16, 16), 4, 1, False).image_mask()
    b = compile_pattern((16, 16), 4, 1, True).image_mask()
    assert not np.array_equal(a, b)
    # the shifted tiling is the plain one on the grid rolled by T/2
    roll = np.roll(np.arange(256).reshape(16, 16), (-2, -2), axis=(0, 1)).reshape(-1)
    assert np.array_equal(b[np.ix_(roll, roll)], a)


def test_small_grid_is_dense_and_paper_scale_is_sparse():
    assert compile_pattern((8, 8), 4, 1, False).is_dense  # 2x2 tiles < 3x3 window
    paper = compile_pattern((64, 64), 8, 1, False, 77)
    assert paper.image_density == pytest.approx(9 / 64)
    assert paper.image_sparsity > 0.84


def test_pattern_is_cached_and_read_only():
    a = compile_pattern((16, 16), 4, 1, True, 3)
    assert compile_pattern((16, 16), 4, 1, True, 3) is a
    with pytest.raises(ValueError):
        a.key_tiles[0, 0] = 1
    with pytest.raises(ValueError, match="does not divide"):
        compile_pattern((10, 16), 4, 1, False)


def test_masked_core_equals_sdpa_with_boolean_mask():
    p = compile_pattern((8, 12), 4, 1, True, 5)
    q, k, v = (torch.randn(6, 8 * 12 + 5, 16) for _ in range(3))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=torch.from_numpy(p.joint_mask()))
    torch.testing.assert_close(MaskedAttention(16, p)(q, k, v), ref, atol=1e-5, rtol=1e-5)
    dense = compile_pattern((8, 8), 4, 1, False, 5)
    q, k, v = (torch.randn(2, 69, 16) for _ in range(3))
    torch.testing.assert_close(MaskedAttention(16, dense)(q, k, v), DenseAttention(16)(q, k, v))
