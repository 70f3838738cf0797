"""Phone limits as rules: the planned weight footprint per operating point, a recipe refused before any work when
its weights would pass a limit (checked here with small limits on the tiny model: just under passes, just over is
refused), the footprint in `inspect` and the manifest, and `plan --device` excluding points by planned memory."""

from __future__ import annotations

import json

import pytest
from configs import tiny_config
from typer.testing import CliRunner

from elasticdit import exporter
from elasticdit.bundle.reader import read_bundle
from elasticdit.chunking import plan_chunks
from elasticdit.cli import app
from elasticdit.errors import PhoneLimitError
from elasticdit.exporter import ExportRequest, export_bundle
from elasticdit.footprint import PhoneLimits, WeightStorage, weight_plan
from elasticdit.model.pipeline import build_models
from elasticdit.operating_points import operating_points
from elasticdit.plan import plan
from elasticdit.targets import get_target, target_recipe

runner = CliRunner()


class WorkStarted(Exception):
    """Raised in place of the export's first real step: the limits were passed."""


@pytest.fixture
def no_work(monkeypatch):
    def started(*args, **kwargs):
        raise WorkStarted

    monkeypatch.setattr(exporter, "export_units", started)


def chunk_bytes(recipe: str, limits: PhoneLimits) -> int:
    """The first package's planned weight-file bytes at the smallest range (block 0), from the refusal's reason."""
    cfg = tiny_config(text_encoder=True)
    points, storage = operating_points(cfg), get_target("ios").weight_storage(target_recipe(recipe, "ios"))
    reason = plan_chunks(cfg, points, [cfg.resolution], weight_plan(cfg, points, cfg.resolution), storage, limits)
    assert isinstance(reason, str)
    return int(reason.split("MiB (")[1].split(" bytes")[0])


def ios_footprint(recipe: str, ops: list[str] | None = None):
    cfg = tiny_config(text_encoder=True)
    points = [p for p in operating_points(cfg) if ops is None or p.name in ops]
    ios = get_target("ios")
    return weight_plan(cfg, points, cfg.resolution).footprint(ios.weight_storage(target_recipe(recipe, "ios")))


def test_footprint_counts_each_tensor_once_in_the_recipes_storage():
    cfg = tiny_config(text_encoder=True)
    points = operating_points(cfg)
    plan32 = weight_plan(cfg, points, cfg.resolution)
    fp32 = plan32.footprint(WeightStorage())
    models = build_models(cfg, "meta")
    parts = (models.transformer, models.vae.decoder, models.text_encoder)
    every = sum(p.numel() for m in parts for p in m.parameters()) + sum(b.numel() for b in models.transformer.buffers())
    assert fp32.total <= every * 4  # each tensor once, however many points share it
    assert fp32.total >= (every * 4) * 0.95  # and every point's (the ratio-specific projections included)
    assert fp32.points["r1_d2"] < fp32.points["r1_d4"] < fp32.total
    half = plan32.footprint(WeightStorage(2.0, 2.0))
    assert abs(half.total - fp32.total / 2) <= 1
    pal4 = plan32.footprint(WeightStorage(2.0, 0.5))
    assert pal4.total < half.total and pal4.others == half.others  # decode / encode_text stay float


def test_a_recipe_over_the_weight_file_limit_is_chunked_or_refused_before_any_work(tiny_ckpt, tmp_path, no_work):
    """Over the weight-file limit the transformer is split into block-range packages (chunking.py) while one range
    fits; when block 0 with the embedders (and decode / encode_text, which ride in the first package) cannot, the
    recipe is refused naming the recipes that fit."""
    fp16 = ios_footprint("ios-fp16")
    out = tmp_path / "b"
    with pytest.raises(WorkStarted):  # just over: chunked, the export goes on
        export_bundle(
            ExportRequest(tiny_ckpt, "ios", out, "ios-fp16", limits=PhoneLimits(weight_file_bytes=fp16.total - 1))
        )
    first = chunk_bytes("ios-fp16", PhoneLimits(function_bytes=1))  # block 0's package, unchunkable below it
    pal4 = chunk_bytes("ios-palettize4", PhoneLimits(function_bytes=1))
    assert pal4 < first
    just_over = PhoneLimits(weight_file_bytes=first - 1, weight_file_rule="the package's one weight.bin")
    with pytest.raises(PhoneLimitError, match="recipe ios-fp16 would put .* weight.bin") as info:
        export_bundle(ExportRequest(tiny_ckpt, "ios", out, "ios-fp16", limits=just_over))
    message = str(info.value)
    assert "split into block-range packages block 0 with the embedders already needs" in message
    assert "ios-palettize4" in message and "ios-int8" in message and "ios-fp32" not in message
    assert not out.exists()
    with pytest.raises(WorkStarted):  # at the limit: the export goes on
        export_bundle(ExportRequest(tiny_ckpt, "ios", out, "ios-fp16", limits=PhoneLimits(weight_file_bytes=first)))


def test_a_function_over_its_limit_is_chunked_or_refused_and_no_recipe_fits(tiny_ckpt, tmp_path, no_work):
    fp = ios_footprint("ios-palettize4", ["r1_d4", "r2_d2"])
    largest = max([*fp.points.values(), *fp.others.values()])
    req = ExportRequest(tiny_ckpt, "ios", tmp_path / "b", "ios-palettize4", ops=["r1_d4", "r2_d2"])
    with pytest.raises(WorkStarted):  # one byte under the largest function: chunked
        export_bundle(ExportRequest(**{**req.__dict__, "limits": PhoneLimits(function_bytes=largest - 1)}))
    with pytest.raises(WorkStarted):
        export_bundle(ExportRequest(**{**req.__dict__, "limits": PhoneLimits(function_bytes=largest)}))
    decode = fp.others["decode"]  # decode cannot be split: under its size, refused whatever the blocks
    with pytest.raises(PhoneLimitError, match="over the .* limit .*decode.*decode alone is over"):
        export_bundle(ExportRequest(**{**req.__dict__, "limits": PhoneLimits(function_bytes=decode - 1)}))
    with pytest.raises(PhoneLimitError, match="no ios recipe fits these operating points"):
        export_bundle(ExportRequest(**{**req.__dict__, "limits": PhoneLimits(weight_file_bytes=1000)}))


def test_android_is_refused_not_chunked(tiny_ckpt, tmp_path, no_work):
    req = ExportRequest(tiny_ckpt, "android", tmp_path / "b", limits=PhoneLimits(weight_file_bytes=1000))
    with pytest.raises(PhoneLimitError, match="android bundles are not split into block-range packages"):
        export_bundle(req)


def test_ios_carries_the_core_ml_limits_and_the_other_targets_none():
    ios = get_target("ios").limits
    assert ios.weight_file_bytes == 2 * 2**30 and ios.function_bytes == 1_000_000_000
    assert get_target("android").limits == PhoneLimits() == get_target("onnx").limits


def test_manifest_reports_weight_bytes_and_the_planned_arena(android_bundle):
    doc = json.loads((android_bundle[0] / "manifest.json").read_text())
    cfg = tiny_config(text_encoder=True)
    points = [p for p in operating_points(cfg) if p.name in ("r1_d4", "r2_d2")]
    fp = weight_plan(cfg, points, cfg.resolution).footprint(WeightStorage())
    for entry in doc["operating_points"]:
        assert entry["weight_bytes"] == fp.points[entry["name"]] > 0
        assert isinstance(entry["arena_bytes"], int) and entry["arena_bytes"] > 0
    # the full-resolution point plans more activation memory than the ratio-2 one
    arenas = {e["name"]: e["arena_bytes"] for e in doc["operating_points"]}
    assert arenas["r1_d4"] > arenas["r2_d2"]
    # what a generation loads beside the point: the decoder and the text encoder, weights and arena
    decoder, text = doc["decoder"], doc["text_encoder"]
    assert decoder["weight_bytes"] == fp.others["decode"] > 0 and decoder["arena_bytes"] > 0
    assert text["weight_bytes"] == fp.others["encode_text"] > 0 and text["arena_bytes"] > 0
    manifest = read_bundle(android_bundle[0]).manifest
    companions = sum(e["weight_bytes"] + e["arena_bytes"] for e in (decoder, text))
    assert manifest.companions_bytes() == companions


def test_inspect_reports_weight_bytes_in_a_recipes_storage(tiny_ckpt):
    reports = []

    def inspect(*args):
        result = runner.invoke(app, ["inspect", str(tiny_ckpt), "--json", *args])
        assert result.exit_code == 0, result.output + result.stderr
        reports.append(json.loads(result.stdout))
        return {p["name"]: p["weight_bytes"] for p in reports[-1]["operating_points"]}

    fp32, pal4 = inspect(), inspect("--target", "ios", "--recipe", "ios-palettize4")
    assert "phone_limits" not in reports[0] and reports[1]["phone_limits"] == {"fits": True, "chunks": None}
    assert (
        fp32
        == weight_plan(tiny_config(text_encoder=True), operating_points(tiny_config(text_encoder=True)), (128, 128))
        .footprint(WeightStorage())
        .points
    )
    assert all(pal4[n] < fp32[n] / 4 for n in fp32)


def profile_doc(weights: dict[str, int], arena: int, companions: int = 0) -> dict:
    return {
        "device": {"kind": "host", "name": "bench"},
        "settings": {"steps": 4, "denoise_calls_per_step": 1},
        "operating_points": [
            {
                "name": n,
                "gflops": w / 1e6,
                "denoise_ms": {"median": 1.0},
                "peak_memory_mb": None,
                "weight_bytes": w,
                "arena_bytes": arena,
                "companions_bytes": companions,
            }
            for n, w in weights.items()
        ],
    }


def test_plan_excludes_points_over_the_budget_by_planned_memory():
    mib = 2**20
    doc = profile_doc({"big": 300 * mib, "small": 100 * mib}, arena=20 * mib)
    at = plan(doc, budget_ms=1e6, memory_mb=320)  # big plans exactly 320 MiB: it fits
    assert at["choice"]["name"] == "big" and at["choice"]["planned_memory_mb"] == 320
    over = plan(doc, budget_ms=1e6, memory_mb=319.99)
    assert over["choice"]["name"] == "small"
    assert over["rejected"][0]["name"] == "big" and "planned" in over["rejected"][0]["reason"]
    with_decoder = plan(profile_doc({"big": 300 * mib, "small": 100 * mib}, 20 * mib, mib), 1e6, memory_mb=320)
    assert with_decoder["choice"]["name"] == "small"  # the decoder's MiB puts big at 321 MiB


def test_plan_device_uses_the_profiles_memory_budget(tmp_path):
    from elasticdit.devices_registry import find_profile

    budget = find_profile("galaxy-a54").app_memory_mb
    mib = 2**20
    doc = profile_doc({"big": (budget + 1) * mib, "small": (budget - 100) * mib}, arena=0)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc))
    result = runner.invoke(
        app, ["plan", "--profile", str(path), "--budget-ms", "1000000", "--device", "galaxy-a54", "--json"]
    )
    assert result.exit_code == 0, result.output + result.stderr
    out = json.loads(result.stdout)
    assert out["choice"]["name"] == "small" and [r["name"] for r in out["rejected"]] == ["big"]


def test_plan_weighs_a_schedule_by_its_points_planned_memory():
    """A schedule without a measured peak carries its points' largest planned memory (a lower bound): excluded
    when that passes the budget, otherwise kept but not counted as memory-checked."""
    from elasticdit.schedules import parse_schedule

    mib = 2**20
    doc = profile_doc({"r1_d4": 300 * mib, "r2_d2": 100 * mib}, arena=20 * mib)
    mixed = [(parse_schedule("r2_d2:0.5,r1_d4:0.5"), None)]
    fits = plan(doc, budget_ms=1e6, memory_mb=400, schedules=mixed)
    row = next(r for r in [fits["choice"], *fits["candidates"]] if r["kind"] == "schedule")
    assert row["planned_memory_mb"] == 320 and row["memory_checked"] is False
    assert fits["choice"]["memory_checked"] is True  # a point's planned memory does check it
    over = plan(doc, budget_ms=1e6, memory_mb=200, schedules=mixed)
    assert {r["name"] for r in over["rejected"]} == {"r1_d4", "r2_d2:0.5,r1_d4:0.5"}
    assert all("planned" in r["reason"] for r in over["rejected"])
