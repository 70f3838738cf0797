"""Core ML chunking (issue 25 item 3): the block-range plan keeps every function and weight file under the limits
(or names why none can), the pieces chained equal the point's whole static network, and an iOS export over a small
function limit writes one package per range whose functions (read back from the packages) keep under it, a manifest
chain that `verify` runs and checks, and fails on a chain that does not hold together."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from configs import tiny_config

from elasticdit.chunking import PieceSpec, piece_module, plan_chunks, point_pieces
from elasticdit.errors import BundleError, BundlePathError
from elasticdit.exporter import ExportRequest, export_bundle, phone_limits_report
from elasticdit.footprint import PhoneLimits, weight_plan
from elasticdit.model.pipeline import build_models
from elasticdit.operating_points import OperatingPoint, operating_points
from elasticdit.targets import get_target, target_recipe
from elasticdit.targets.ios.package import describe
from elasticdit.verify import verify_bundle

OPS = ["r1_d4", "r2_d2"]
MAX_REL = 1e-6  # float32: the chained pieces compute the same ops in the same order as the whole network


def chain(models, point, resolution, pieces: list[PieceSpec], inputs: dict) -> torch.Tensor:
    env = dict(inputs)
    for piece in pieces:
        out = piece_module(models, point, resolution, "masked", piece)(*[env[n] for n in piece.inputs])
        env.update(zip(piece.outputs, out if isinstance(out, tuple) else (out,), strict=True))
    return env["velocity"]


@pytest.mark.parametrize("prediction", ["velocity", "sample"])
def test_chained_pieces_equal_the_whole_network(prediction):
    cfg = tiny_config(text_encoder=True)
    cfg = dataclasses.replace(cfg, transformer=dataclasses.replace(cfg.transformer, prediction=prediction))
    torch.manual_seed(0)
    models = build_models(cfg, "cpu")
    t, g = cfg.transformer, torch.Generator().manual_seed(1)
    inputs = {
        "latent": torch.randn(1, t.in_channels, *cfg.latent_size(cfg.resolution), generator=g),
        "timestep": torch.full((1,), 0.3),
        "text": torch.randn(1, t.text_len, t.text_dim, generator=g),
        "pooled": torch.randn(1, t.pooled_dim, generator=g),
    }
    # (0, 1): the point's last block sits in a middle range, so the text stream ends before the last package
    points = [*operating_points(cfg), OperatingPoint(1, "x", (0, 1))]
    splits = [[(0, 2), (2, 4)], [(0, 1), (1, 3), (3, 4)], [(0, 1), (1, 2), (2, 3), (3, 4)]]
    for point in points:
        with torch.no_grad():
            whole = models.transformer.operating_point(point, cfg.resolution, "masked").eval()(*inputs.values())
        for ranges in splits:
            pieces = point_pieces(point, ranges, prediction == "sample")
            assert [b for p in pieces for b in p.blocks] == list(point.blocks)
            with torch.no_grad():
                got = chain(models, point, cfg.resolution, pieces, inputs)
            err = float((got - whole).norm() / whole.norm())
            assert err <= MAX_REL, (point.name, ranges, err)
    mutated = point_pieces(points[0], splits[1], prediction == "sample")
    with torch.no_grad():  # a piece dropped from the chain: the output is another function
        skipped = [mutated[0], dataclasses.replace(mutated[2], inputs=["img0", "txt0", *mutated[2].inputs[2:]])]
        got = chain(models, points[0], cfg.resolution, skipped, inputs)
        whole = models.transformer.operating_point(points[0], cfg.resolution, "masked").eval()(*inputs.values())
    assert float((got - whole).norm() / whole.norm()) > 1e-2


def plan_for(recipe: str, limits: PhoneLimits, ops=None):
    cfg = tiny_config(text_encoder=True)
    points = [p for p in operating_points(cfg) if ops is None or p.name in ops]
    storage = get_target("ios").weight_storage(target_recipe(recipe, "ios"))
    plan = weight_plan(cfg, points, cfg.resolution)
    return plan.footprint(storage), plan_chunks(cfg, points, [cfg.resolution], plan, storage, limits)


def test_the_plan_keeps_each_range_under_the_limits_or_names_why_not():
    fp, _ = plan_for("ios-fp32", PhoneLimits())
    largest = max(fp.points.values())
    for limits in (
        PhoneLimits(function_bytes=largest - 1),
        PhoneLimits(function_bytes=largest // 2),
        PhoneLimits(weight_file_bytes=fp.total - 1),
        PhoneLimits(weight_file_bytes=fp.total // 2, function_bytes=largest // 2),
    ):
        _, chunks = plan_for("ios-fp32", limits)
        assert not isinstance(chunks, str), (limits, chunks)
        assert len(chunks.ranges) >= 2
        assert chunks.ranges[0][0] == 0 and chunks.ranges[-1][1] == 4
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(chunks.ranges, chunks.ranges[1:], strict=False))
        assert all(limits.function_bytes is None or b <= limits.function_bytes for b in chunks.function_bytes)
        assert all(limits.weight_file_bytes is None or b <= limits.weight_file_bytes for b in chunks.file_bytes)
    _, halves = plan_for("ios-fp32", PhoneLimits(function_bytes=largest // 2))
    _, reason = plan_for("ios-fp32", PhoneLimits(function_bytes=min(halves.function_bytes) - 1))
    assert isinstance(reason, str) and reason.startswith("block ")
    _, lighter = plan_for("ios-int8", PhoneLimits(function_bytes=largest // 2))  # int8 weights: fewer ranges
    assert len(lighter.ranges) <= len(halves.ranges)


def test_inspect_reports_the_block_range_packages_or_the_refusal():
    cfg = tiny_config(text_encoder=True)
    fp, _ = plan_for("ios-fp32", PhoneLimits())
    limit = max(fp.points.values()) // 2
    report = phone_limits_report("ios", "ios-fp32", cfg, cfg.resolution, PhoneLimits(function_bytes=limit))
    assert report["fits"] and [c["blocks"] for c in report["chunks"]] == [[0, 1], [1, 3], [3, 4]]
    assert [c["file"] for c in report["chunks"]] == [f"model_part{k}.mlpackage" for k in range(3)]
    assert all(0 < c["largest_function_bytes"] <= limit for c in report["chunks"])
    refused = phone_limits_report("ios", "ios-fp32", cfg, cfg.resolution, PhoneLimits(function_bytes=1000))
    assert not refused["fits"] and "no ios recipe fits" in refused["error"]


@pytest.fixture(scope="module")
def chunked_bundle(tiny_ckpt, tmp_path_factory):
    """An ios-fp32 bundle of OPS exported under half the largest function's planned bytes: three block ranges
    (r2_d2, blocks 0 and 3, has no function in the middle one)."""
    fp, _ = plan_for("ios-fp32", PhoneLimits(), OPS)
    limit = max(fp.points.values()) // 2
    out = tmp_path_factory.mktemp("ios-chunked") / "bundle"
    req = ExportRequest(tiny_ckpt, "ios", out, "ios-fp32", ops=OPS, limits=PhoneLimits(function_bytes=limit))
    export_bundle(req)
    return out, limit


@pytest.mark.slow
def test_a_chunked_ios_bundle_keeps_each_function_under_the_limit_and_verifies(chunked_bundle, tiny_ckpt, tmp_path):
    bundle, limit = chunked_bundle
    doc = json.loads((bundle / "manifest.json").read_text())
    packages = sorted(p.name for p in bundle.glob("*.mlpackage"))
    assert packages == ["model_part0.mlpackage", "model_part1.mlpackage", "model_part2.mlpackage"]
    functions = {}
    for name in packages:  # read back from each package, not from the plan
        functions.update({fn: (name, r["weight_bytes"]) for fn, r in describe(bundle / name).items()})
    points = {p["name"]: p for p in doc["operating_points"]}
    for point in points.values():
        chain = point["chunks"]
        assert [b for c in chain for b in c["blocks"]] == point["blocks"]
        assert [i["name"] for i in chain[0]["inputs"]] == ["latent", "timestep", "text", "pooled"]
        assert [o["name"] for o in chain[-1]["outputs"]] == ["velocity"] == [o["name"] for o in point["outputs"]]
        for c in chain:
            assert functions[c["function"]][0] == c["file"]
            assert 0 < functions[c["function"]][1] <= limit, (c["function"], functions[c["function"]][1], limit)
    assert [c["file"] for c in points["r2_d2"]["chunks"]] == ["model_part0.mlpackage", "model_part2.mlpackage"]
    assert doc["decoder"]["file"] == doc["text_encoder"]["file"] == "model_part0.mlpackage"
    assert functions["decode"][1] <= limit and functions["encode_text"][1] <= limit
    result = verify_bundle(bundle, tiny_ckpt)
    assert result["passed"], result["methods"]
    notes = {m["method"]: m["note"] for m in result["methods"]}
    assert "ran 3 pieces' graphs, chained" in notes["denoise_r1_d4"]
    found = int(notes["denoise_r1_d4"].split("with ")[1].split(" weight tensors")[0])
    assert found > 0  # the pieces ran with weights decoded from the packages
    kinds = {m["method"]: m["kind"] for m in result["methods"]}
    pieces = [c["function"] for p in points.values() for c in p["chunks"]]
    assert len(pieces) == 5 and all(kinds[f] == "denoise piece" for f in pieces)  # each piece checked on its own
    assert notes["denoise_r1_d4_part1"] == "blocks [1, 2] of denoise_r1_d4 in model_part1.mlpackage"

    def mutated(change) -> object:
        copy = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        shutil.copytree(bundle, copy)
        doc = json.loads((copy / "manifest.json").read_text())
        change(next(p for p in doc["operating_points"] if p["name"] == "r1_d4")["chunks"])
        (copy / "manifest.json").write_text(json.dumps(doc))
        return copy

    dropped = mutated(lambda chain: chain.pop(1))
    with pytest.raises(BundleError, match="chain of denoise_r1_d4 runs blocks"):
        verify_bundle(dropped, tiny_ckpt)
    swapped = mutated(lambda chain: chain.insert(0, chain.pop(1)))
    with pytest.raises(BundleError, match="chain of denoise_r1_d4 runs blocks \\[1, 2, 0, 3\\]"):
        verify_bundle(swapped, tiny_ckpt)

    def renamed(chain):  # the last piece said to take an image stream its function does not
        chain[2]["inputs"][0]["name"] = "img7"

    with pytest.raises(BundleError, match="function denoise_r1_d4_part2 inputs are .* the manifest says .*img7"):
        verify_bundle(mutated(renamed), tiny_ckpt)

    def shifted(chain):  # block 1 moved into the first piece: the same blocks in all, another piece's graph
        chain[0]["blocks"], chain[1]["blocks"] = [0, 1], [2]

    with pytest.raises(BundleError, match="graph rebuilt for denoise_r1_d4_part0 differs"):
        verify_bundle(mutated(shifted), tiny_ckpt)

    def escaped(chain):  # a piece's file outside the bundle: refused before anything is read
        chain[1]["file"] = "../model_part1.mlpackage"

    with pytest.raises(BundlePathError, match="denoise_r1_d4_part1"):
        verify_bundle(mutated(escaped), tiny_ckpt)


def test_an_ios_bundle_within_the_limits_is_one_package_without_a_chain(ios_bundle):
    doc = json.loads((ios_bundle[0] / "manifest.json").read_text())
    assert sorted(p.name for p in ios_bundle[0].glob("*.mlpackage")) == ["model.mlpackage"]
    assert all("chunks" not in p and p["file"] == "model.mlpackage" for p in doc["operating_points"])
