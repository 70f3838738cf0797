"""Step schedules in elasticdit-run (docs/design.md "Step schedules", docs/runtime.md): `--schedule NAME|SPEC`
gives the per-step points of the contract's rule (step i of N runs phase min{k : (i + 0.5) / N < C_k}), from a
spec or a name in the manifest's "schedules", and a scheduled run equals the same points given with --per-step
(itself checked step by step against the Python sampler in test_native_runtime.py).

The C++ rule is checked against the Python one (`elasticdit.schedules`, which `generate` samples with): each
cumulative share rounded to 9 decimals, so 0.1 + 0.2 is the boundary 0.3 (a case below)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_native_support import PROMPT, compare_images, latent_shape, png
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.generation import noise_for
from elasticdit.native.errors import NativeRunError
from elasticdit.schedules import parse_schedule


def contract_points(phases: list[tuple[str, float]], steps: int) -> list[str]:
    """The Python side's points for each step (elasticdit.schedules, which `generate` samples with)."""
    return parse_schedule(spec_of(phases)).step_points(steps)


def spec_of(phases: list[tuple[str, float]]) -> str:
    return ",".join(f"{p}:{s!r}" for p, s in phases)


CHEAP_FIRST = [{"point": "r2_d2", "share": 0.3}, {"point": "r1_d4", "share": 0.7}]


def scheduled_copy(android_bundle, tmp_path_factory, schedules: dict) -> Path:
    """The session's android bundle (points r1_d4, r2_d2), hard-linked, with these named schedules."""
    copy = tmp_path_factory.mktemp("scheduled") / "bundle"
    shutil.copytree(android_bundle[0], copy, copy_function=os.link)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schedules"] = schedules
    (copy / "manifest.json").unlink()  # a hard link: write a new file, never the session bundle's
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.fixture(scope="module")
def bundle(android_bundle, tmp_path_factory):
    """A name that shadows the point it spells (elasticdit-run takes it; the Python manifest reader refuses it)."""
    return scheduled_copy(
        android_bundle, tmp_path_factory, {"cheap-first": CHEAP_FIRST, "r1_d4": [{"point": "r2_d2", "share": 1.0}]}
    )


@pytest.fixture(scope="module")
def named_bundle(android_bundle, tmp_path_factory):
    """A bundle both runners read: one named two-phase schedule."""
    return scheduled_copy(android_bundle, tmp_path_factory, {"cheap-first": CHEAP_FIRST})


def points(native, bundle, schedule: str, steps: int) -> list[str]:
    doc = json.loads(native.run("schedule", str(bundle), "--schedule", schedule, "--steps", str(steps)).stdout)
    assert doc["steps"] == steps and len(doc["points"]) == steps
    return doc["points"]


CASES = [
    [("r2_d2", 0.3), ("r1_d4", 0.7)],
    [("r2_d2", 0.5), ("r1_d4", 0.5)],  # a boundary at (i + 0.5) / N exactly for odd N
    [("r1_d4", 0.1), ("r2_d2", 0.2), ("r1_d4", 0.7)],  # 0.1 + 0.2 is not 0.3 in binary: rounded, it is
    [("r2_d2", 1 / 3), ("r1_d4", 1 / 3), ("r2_d2", 1 / 3)],
    [("r1_d4", 0.25), ("r2_d2", 0.25), ("r1_d4", 0.25), ("r2_d2", 0.25)],
    [("r2_d2", 0.05), ("r1_d4", 0.95)],  # a phase that gets no step at small N
]


@pytest.mark.parametrize("phases", CASES, ids=lambda p: spec_of(p))
def test_schedule_steps_follow_the_contract(native, bundle, phases):
    for steps in (1, 2, 3, 4, 5, 7, 10, 13, 28, 50):
        assert points(native, bundle, spec_of(phases), steps) == contract_points(phases, steps), steps


def test_named_schedules_and_plain_points(native, bundle):
    assert points(native, bundle, "cheap-first", 10) == contract_points([("r2_d2", 0.3), ("r1_d4", 0.7)], 10)
    assert points(native, bundle, "r2_d2", 4) == ["r2_d2"] * 4
    assert points(native, bundle, "r1_d4", 3) == ["r2_d2"] * 3  # the manifest's name wins over the point
    # the boundary: step 1 of 3 sits at (1 + 0.5) / 3 = 0.5 = C_1, which is not < C_1 (a rule with <= differs)
    half = [("r2_d2", 0.5), ("r1_d4", 0.5)]
    assert points(native, bundle, spec_of(half), 3) == ["r2_d2", "r1_d4", "r1_d4"]
    # 0.1 + 0.2 rounded to 9 decimals is the boundary 0.3 that step 1 of 5 sits on: r1_d4 (unrounded: r2_d2)
    assert points(native, bundle, "r1_d4:0.1,r2_d2:0.2,r1_d4:0.7", 5) == ["r2_d2"] + ["r1_d4"] * 4


@pytest.mark.parametrize(
    "spec, message",
    [
        ("r2_d2:0.5,r1_d4:0.4", "shares sum to 0.9"),
        ("r2_d2:0.5,r1_d4", "is not POINT:SHARE"),
        ("r2_d2:x,r1_d4:0.5", "share 'x' is not a number"),
        ("r2_d2:0,r1_d4:1", "must be a number above 0"),
        ("r9_d9:0.5,r1_d4:0.5", "unknown operating point 'r9_d9'"),
        ("nosuch", "unknown operating point 'nosuch'"),
        ("", "a schedule is empty"),
    ],
)
def test_bad_schedules_are_named_errors(native, bundle, spec, message):
    with pytest.raises(NativeRunError) as err:
        points(native, bundle, spec, 4)
    assert err.value.kind == "UsageError" and message in err.value.message, str(err.value)


def test_generate_with_a_schedule_equals_per_step(native, bundle, tmp_path):
    noise = noise_for(3, latent_shape(bundle)).numpy()
    plan = contract_points([("r2_d2", 0.3), ("r1_d4", 0.7)], 3)
    assert plan == ["r2_d2", "r1_d4", "r1_d4"]
    (tmp_path / "named").mkdir()
    (tmp_path / "per_step").mkdir()
    named = native.generate(bundle, PROMPT, noise, schedule="cheap-first", steps=3, dump=tmp_path / "named")
    by_hand = native.generate(bundle, PROMPT, noise, per_step=plan, dump=tmp_path / "per_step")
    assert [s["point"] for s in named["runs"][0]["steps"]] == plan
    assert named["schedule"] == by_hand["schedule"] == plan
    for name in ("latent", "image"):
        assert np.array_equal(
            np.load(tmp_path / "named" / f"{name}.npy"), np.load(tmp_path / "per_step" / f"{name}.npy")
        )
    with pytest.raises(NativeRunError, match="give one of --op, --schedule, --per-step"):
        native.generate(bundle, PROMPT, noise, schedule="cheap-first", op="r2_d2")


@pytest.mark.parametrize("schedule", ["cheap-first", "r2_d2:0.5,r1_d4:0.5", "r1_d4:0.1,r2_d2:0.2,r1_d4:0.7"])
def test_cli_generate_native_schedule_equals_python(native, named_bundle, tmp_path, schedule):
    """`generate --runner native --schedule` hands the schedule to elasticdit-run (a manifest name as its name, a
    spec with exact shares): every step runs the point the Python path runs, and the image equals the Python
    path's on the same seed within test_native_runtime's tolerance (PSNR >= 45 dB, 99% of pixels within 1 LSB)."""
    cli = CliRunner()
    base = ["generate", str(named_bundle), "--prompt", PROMPT, "--seed", "5", "--steps", "5", "--schedule", schedule]
    py = cli.invoke(app, [*base, "--json", "-o", str(tmp_path / "python.png")])
    assert py.exit_code == 0, py.output + py.stderr
    nat = cli.invoke(app, [*base, "--json", "--runner", "native", "-o", str(tmp_path / "native.png")])
    assert nat.exit_code == 0, nat.output + nat.stderr
    summary, want = json.loads(nat.stdout), json.loads(py.stdout)
    ran = [s["point"] for s in summary["timings"]["runs"][0]["steps"]]
    assert len(set(ran)) == 2 and summary["schedule"] == want["schedule"]
    phases = [(p["point"], p["share"]) for p in want["schedule"]["phases"]]
    assert ran == contract_points(phases, 5)

    def same(a: str, b: str) -> bool:
        figures = compare_images(png(tmp_path / a), png(tmp_path / b))
        return figures["psnr_db"] >= 45 and figures["within_1_lsb"] >= 0.99

    assert same("python.png", "native.png")
    # the check sees the schedule: the run of its first point alone fails it (~72% of pixels within 1 LSB)
    one = cli.invoke(app, [*base[:-2], "--op", ran[0], "--runner", "native", "-o", str(tmp_path / "one.png")])
    assert one.exit_code == 0, one.output + one.stderr
    assert not same("one.png", "native.png")


def test_profile_host_native_measures_schedules_whole(native, named_bundle):
    """`profile --runner native` with schedules: each (the manifest's named one and a spec) runs end to end in
    elasticdit-run, so its row has a measured latency beside the computed one."""
    args = ["profile", str(named_bundle), "--runner", "native", "--schedule", "r2_d2:0.5,r1_d4:0.5"]
    result = CliRunner().invoke(app, [*args, "--runs", "2", "--warmup", "0", "--steps", "3", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    rows = {r["name"]: r for r in report["schedules"]}
    assert set(rows) == {"cheap-first", "r2_d2:0.5,r1_d4:0.5"}
    assert rows["cheap-first"]["steps_per_point"] == {"r2_d2": 1, "r1_d4": 2}
    for row in rows.values():
        assert row["measured_e2e_ms"]["n"] == 2 and row["measured_e2e_ms"]["min"] > 0 and row["computed_e2e_ms"] > 0
        assert row["peak_memory_mb"] > 1 and {"denoise_r2_d2", "denoise_r1_d4"} <= set(row["memory"]["methods"])
