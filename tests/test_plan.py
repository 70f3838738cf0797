"""`elasticdit plan`: best operating point for a latency (and memory) budget from profile results."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from elasticdit.cli import app

runner = CliRunner()


def point(name, denoise, gflops, memory, score=None):
    p = {
        "name": name,
        "gflops": gflops,
        "denoise_ms": {"min": denoise, "median": denoise, "p90": denoise, "all": [denoise]},
        "decode_ms": {"median": 20.0},
        "text_encoder_ms": {"median": 5.0},
        "peak_memory_mb": memory,
        "e2e_ms": 0.0,
    }
    if score is not None:
        p["score"] = score
    return p


def results(tmp_path, points, steps=4, calls=2):
    doc = {
        "device": {"kind": "host", "name": "bench"},
        "settings": {"steps": steps, "denoise_calls_per_step": calls},
        "operating_points": points,
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc))
    return path


# e2e at 4 steps x 2 calls = 5 + 8 * denoise + 20
POINTS = [
    point("r1_d6", 30.0, 0.667, 900),
    point("r1_d4", 20.0, 0.447, 700),
    point("r2_d6", 8.0, 0.155, 300),
    point("r4_d2", 2.0, 0.025, 120),
]


def plan(path, *args):
    return runner.invoke(app, ["plan", "--profile", str(path), *args])


def test_most_compute_that_fits(tmp_path):
    path = results(tmp_path, POINTS)
    result = plan(path, "--budget-ms", "200", "--json")  # r1_d6 needs 265 ms, r1_d4 185 ms
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["choice"]["name"] == "r1_d4" and doc["choice"]["e2e_ms"] == pytest.approx(185.0)
    assert [c["name"] for c in doc["candidates"]] == ["r2_d6", "r4_d2"]
    assert doc["rejected"][0]["name"] == "r1_d6" and "265.0 ms > 200 ms" in doc["rejected"][0]["reason"]
    assert doc["ranked_by"] == "gflops" and doc["steps"] == 4


def test_steps_are_recomputed_from_per_step_figures(tmp_path):
    path = results(tmp_path, POINTS)
    doc = json.loads(plan(path, "--budget-ms", "200", "--steps", "2", "--json").stdout)
    # at 2 steps: r1_d6 = 5 + 4 * 30 + 20 = 145 ms fits
    assert doc["choice"]["name"] == "r1_d6" and doc["choice"]["e2e_ms"] == pytest.approx(145.0)


def test_quality_scores_rank_when_every_point_has_one(tmp_path):
    scored = [
        point("r1_d4", 20.0, 0.447, 700, 0.70),
        point("r2_d6", 8.0, 0.155, 300, 0.74),
        point("r4_d2", 2.0, 0.025, 120, 0.40),
    ]
    doc = json.loads(plan(results(tmp_path, scored), "--budget-ms", "500", "--json").stdout)
    assert doc["ranked_by"] == "score" and doc["choice"]["name"] == "r2_d6"
    # scores can also come with plan itself (the output of `elasticdit eval --json`)
    q = tmp_path / "eval.json"
    q.write_text(
        json.dumps(
            {
                "operating_points": [
                    {"name": p["name"], "score": s} for p, s in zip(POINTS, (0.1, 0.2, 0.3, 0.9), strict=True)
                ]
            }
        )
    )
    doc = json.loads(plan(results(tmp_path, POINTS), "--budget-ms", "500", "--quality", str(q), "--json").stdout)
    assert doc["choice"]["name"] == "r4_d2" and doc["choice"]["score"] == 0.9


def test_memory_budget_from_flag_or_device_profile(tmp_path):
    path = results(tmp_path, POINTS)
    doc = json.loads(plan(path, "--budget-ms", "1000", "--memory-mb", "800", "--json").stdout)
    assert doc["choice"]["name"] == "r1_d4" and "900 MB > 800 MB" in doc["rejected"][0]["reason"]
    big = [point("r1_d6", 30.0, 0.667, 2500), point("r2_d6", 8.0, 0.155, 1200)]
    doc = json.loads(plan(results(tmp_path, big), "--budget-ms", "1000", "--device", "galaxy-a54", "--json").stdout)
    assert doc["memory_mb"] == 1536 and doc["choice"]["name"] == "r2_d6"
    assert doc["memory_source"].startswith("device profile galaxy-a54")


def test_incomplete_profile_is_flagged(tmp_path):
    path = results(tmp_path, POINTS[2:])
    doc = json.loads(path.read_text())
    doc.update(complete=False, missing=["r1_d6", "r1_d4"])
    path.write_text(json.dumps(doc))
    result = plan(path, "--budget-ms", "200")
    assert result.exit_code == 0 and "note: the profile is incomplete; not measured: r1_d6, r1_d4" in result.stdout
    assert json.loads(plan(path, "--budget-ms", "200", "--json").stdout)["profile_complete"] is False


def test_no_fit_is_a_clear_error(tmp_path):
    result = plan(results(tmp_path, POINTS), "--budget-ms", "30")
    assert result.exit_code == 1 and result.stdout == ""
    assert "no operating point fits 30 ms at 4 steps; the fastest, r4_d2, needs 41.0 ms and 120 MB" in result.stderr


def test_human_output(tmp_path):
    result = plan(results(tmp_path, POINTS), "--budget-ms", "200", "--memory-mb", "4000")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("r1_d4: 185.0 ms at 4 steps, 700 MB (0.447 GFLOPs/step); budget 200 ms, 4000 MB")
    assert "  next: r2_d6 89.0 ms, 300 MB" in lines and "  too big: r1_d6 (265.0 ms > 200 ms)" in lines


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "cannot read profile results"),
        (json.dumps({"operating_points": []}), "lacks settings.denoise_calls_per_step"),
        (
            json.dumps({"settings": {"steps": 4, "denoise_calls_per_step": 1}, "operating_points": [{"name": "a"}]}),
            "lacks name or denoise_ms.median",
        ),
    ],
)
def test_malformed_results_are_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = plan(path, "--budget-ms", "100")
    assert result.exit_code == 1 and message in result.stderr


def test_plan_reads_a_real_profile_report(tmp_path):
    # the profile tests check the producer; here the consumer reads the same shape `build_report` writes
    from elasticdit.bundle.manifest import Manifest, PointEntry
    from elasticdit.profile.report import build_report
    from elasticdit.targets import target_recipe

    point = PointEntry(
        method="denoise_r2_d2", file="model.pte", inputs=[], outputs=[], name="r2_d2", compression_ratio=2, depth="2",
        blocks=[0, 3], gflops=0.0014,
    )  # fmt: skip
    manifest = Manifest(
        target="android",
        checkpoint_sha256="x",
        recipe=target_recipe("android-fp32", "android"),
        resolution=(128, 128),
        scheduler={},
        operating_points=[point],
    )
    events = [
        {"event": "method", "kind": "decode", "method": "decode", "load_ms": {"first": 1, "warm": 1}, "ms": [8.0]},
        {
            "event": "point",
            "name": "r2_d2",
            "method": "denoise_r2_d2",
            "kind": "denoise",
            "load_ms": {"first": 2, "warm": 1},
            "ms": [1.0, 3.0, 2.0],
            "ops": None,
            "memory": {"peak_mb": 7.5},
        },
    ]
    report = build_report(manifest, "b", {"kind": "host"}, {"steps": 4, "denoise_calls_per_step": 2}, events)
    assert report["operating_points"][0]["e2e_ms"] == pytest.approx(8.0 + 4 * 2 * 2.0)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(report))
    doc = json.loads(plan(path, "--budget-ms", "50", "--steps", "8", "--json").stdout)
    assert doc["choice"] == {
        "name": "r2_d2",
        "kind": "point",
        "e2e_ms": 40.0,
        "denoise_ms": 2.0,
        "peak_memory_mb": 7.5,
        "gflops": 0.0014,
        "score": None,
        "memory_checked": True,
    }
