"""`inspect`: one row per operating point with counted (not formula) FLOPs, sparsity and parameters."""

import json

import pytest
from configs import paper_scale_config, tiny_config
from typer.testing import CliRunner

from elasticdit.cli import app

runner = CliRunner()


def dense_gflops(cfg, point):
    """Independent arithmetic for the matmuls of one dense forward (batch 1), to cross-check the counter."""
    t = cfg.transformer
    c, gh = t.hidden_size, cfg.token_grid(point.ratio)[0]
    n, txt = gh * gh, t.text_len
    s = n + txt
    cell = t.patch_size * point.ratio
    flops = 2 * n * (16 * cell * cell) * c  # patch conv
    flops += 2 * (256 * c + c * c) + 2 * (t.pooled_dim * c + c * c) + 2 * txt * t.text_dim * c  # conditioning
    for i, _ in enumerate(point.blocks):
        last = i == len(point.blocks) - 1
        flops += 2 * c * 6 * c * 2  # two adaLN-Zero linears
        flops += 2 * s * c * c * 3  # q, k, v over both streams
        flops += 2 * 2 * t.num_heads * s * s * t.head_dim  # scores and weighted sum
        flops += 2 * n * c * c + (0 if last else 2 * txt * c * c)  # output projections
        flops += 2 * 2 * n * c * t.mlp_hidden + (0 if last else 2 * 2 * txt * c * t.mlp_hidden)
        # layer norms take their means as a matmul with an averaging vector: 2 matmuls of 2*rows*C each
        flops += 4 * c * (n + txt + n + (0 if last else txt))  # norm1, norm1_context, norm2, norm2_context
        flops += 2 * 2 * s * c if t.qk_norm else 0  # RMS qk-norm of q and k over both streams
    flops += 2 * c * 2 * c + 4 * n * c + 2 * n * c * cell * cell * 16  # norm_out linear and norm, proj_out
    return flops / 1e9


def test_inspect_json(tiny_ckpt):
    result = runner.invoke(app, ["inspect", str(tiny_ckpt), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    cfg = tiny_config(text_encoder=True)
    from elasticdit.operating_points import operating_points

    points = {p.name: p for p in operating_points(cfg)}
    rows = report["operating_points"]
    assert [r["name"] for r in rows] == list(points)
    for row in rows:
        p = points[row["name"]]
        assert row["token_grid"] == list(cfg.token_grid(p.ratio)) and row["tokens"] == row["token_grid"][0] ** 2
        assert row["text_tokens"] == 5 and row["compression_ratio"] == p.ratio and row["depth"] == p.depth
        assert row["gflops_dense"] == pytest.approx(dense_gflops(cfg, p), rel=1e-9)
        assert row["gflops"] <= row["gflops_dense"] + 1e-12
        assert set(row["ssba"]) >= {"tile", "window", "image_sparsity", "joint_sparsity"}
        assert row["activation_mb"] > 0
    full, light = rows[0], rows[-1]
    assert full["ssba"]["image_sparsity"] == pytest.approx(1 - 9 / 16)  # 4x4 tiles, 3x3 window
    assert light["ssba"]["image_sparsity"] == 0  # 2x2 tiles: dense
    assert full["params"] > rows[1]["params"]  # depth 4 runs more blocks than depth 2
    assert report["totals"]["operating_points"] == 4


def test_inspect_table_and_default_demo():
    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 0, result.output
    assert "r1_d6" in result.stdout and "r4_d3" in result.stdout and "9 operating points" in result.stdout


def test_paper_scale_config_reaches_84_percent(tmp_path):
    path = tmp_path / "paper.json"
    path.write_text(paper_scale_config().to_json())
    result = runner.invoke(app, ["inspect", str(path), "--json", "--attention", "masked"])
    assert result.exit_code == 0, result.output
    full = json.loads(result.stdout)["operating_points"][0]
    assert full["token_grid"] == [64, 64] and full["ssba"]["tile"] == 8
    assert full["ssba"]["image_sparsity"] >= 0.84


def test_bad_resolution_is_one_line(tiny_ckpt):
    result = runner.invoke(app, ["inspect", str(tiny_ckpt), "--resolution", "100", "128"])
    assert result.exit_code == 1 and result.stderr.startswith("error:") and "downsample" in result.stderr
