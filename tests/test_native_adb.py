"""`profile --device adb --runner elasticdit-run`: the app-side runner pushed to the phone and each point measured
end to end, against the stand-in adb (tests/data/fake_adb.py), which runs this host's real elasticdit-run build
where the phone would run the arm64 one, so the transport parses the runner's real output."""

from __future__ import annotations

import json

import pytest
from test_profile_adb import PIXEL, PROPS
from test_profile_support import adb_calls, arm64_elf, install_fake_adb
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.native.run import MARKER

cli = CliRunner()


@pytest.fixture(scope="module")
def bundle(android_bundle):
    return android_bundle[0]


def app_runner_elf(path):
    """An arm64 ELF header carrying elasticdit-run's marker: what the NDK build of runtime/ is to check_runner."""
    arm64_elf(path)
    path.write_bytes(path.read_bytes() + MARKER + b"\0")
    return path


def profile(tmp_path, bundle, native, scenario, *args):
    scenario = {"devices": [PIXEL], "props": PROPS, "elasticdit_run": str(native.binary), **scenario}
    env = install_fake_adb(tmp_path / "bin", tmp_path / "state", scenario)
    runner = app_runner_elf(tmp_path / "elasticdit-run")
    argv = ["profile", str(bundle), "--device", "adb", "--runner", str(runner), "--json", *args]
    return cli.invoke(app, argv, env=env), tmp_path / "state"


def test_profile_over_adb_with_elasticdit_run(native, bundle, tmp_path):
    result, state = profile(
        tmp_path, bundle, native, {}, "--runs", "2", "--warmup", "1", "--steps", "2", "--threads", "2"
    )
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["complete"] and report["device"]["serial"] == PIXEL["serial"]
    assert "elasticdit-run" in report["device"]["backend"]
    for p in report["operating_points"]:
        assert p["e2e_measured_ms"]["n"] == 2 and p["e2e_measured_ms"]["min"] > 0
        assert p["denoise_ms"]["n"] == 2 * 2 and p["peak_memory_mb"] > 1 and p["ops"] == []
    assert report["decoder"]["ms"]["n"] == 2 and report["text_encoder"]["ms"]["n"] == 2

    calls = [c[2:] for c in adb_calls(state) if c[:2] == ["-s", PIXEL["serial"]]]
    workdir = next(c[1].split()[-1] for c in calls if c[0] == "shell" and c[1].startswith("mkdir -p"))
    pushes = [c[2] for c in calls if c[0] == "push"]
    assert pushes == [f"{workdir}/{n}" for n in ("elasticdit-run", "model.pte", "manifest.json", "noise-0.npy")]
    runs = [c[1] for c in calls if c[0] == "shell" and "./elasticdit-run" in c[1]]
    assert runs == [
        f"cd {workdir} && ./elasticdit-run generate . --prompt 'a red circle left of a blue square' "
        f"--noise noise-0.npy --op {op} --runs 2 --warmup 1 --json --steps 2 --threads 2"
        for op in ("r1_d4", "r2_d2")
    ]
    assert calls[-1] == ["shell", f"rm -rf {workdir}"]


def test_runner_error_on_the_phone_is_named(native, bundle, tmp_path):
    # a bundle whose manifest names a method the program lacks: the runner's own named error comes back
    broken = tmp_path / "broken"
    broken.mkdir()
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["operating_points"][1]["method"] = "denoise_r9_d9"
    (broken / "manifest.json").write_text(json.dumps(doc))
    (broken / "model.pte").write_bytes((bundle / "model.pte").read_bytes())
    result, _ = profile(tmp_path, broken, native, {}, "--ops", "r2_d2", "--runs", "1", "--warmup", "0")
    assert result.exit_code == 1
    assert "elasticdit-run on the phone, r2_d2: MissingMethodError: ./model.pte has no method 'denoise_r9_d9'" in (
        result.stderr
    ), result.stderr


def test_phone_gone_mid_run_keeps_what_was_measured(native, bundle, tmp_path):
    result, state = profile(tmp_path, bundle, native, {"gone_after": 1}, "--runs", "1", "--warmup", "0", "--steps", "1")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["complete"] is False and [p["name"] for p in report["operating_points"]] == ["r1_d4"]
    assert report["missing"] == ["r2_d2"] and "went away during `adb shell elasticdit-run`" in report["error"]
    assert adb_calls(state)[-1][-1].startswith("rm -rf /data/local/tmp/elasticdit-")


def test_a_schedule_is_measured_whole_on_the_phone(native, bundle, tmp_path):
    """`--schedule` with elasticdit-run over adb: the schedule runs end to end on the phone (`--schedule SPEC`, the
    shares written exactly), its latency measured there, not only computed from the points' step medians."""
    spec = "r2_d2:0.5,r1_d4:0.5"
    args = ("--schedule", spec, "--runs", "2", "--warmup", "0", "--steps", "2", "--no-memory")
    result, state = profile(tmp_path, bundle, native, {}, *args)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert "schedule_notes" not in report["settings"]
    (row,) = report["schedules"]
    assert row["spec"] == spec and row["steps_per_point"] == {"r2_d2": 1, "r1_d4": 1}
    assert row["measured_e2e_ms"]["n"] == 2 and row["measured_e2e_ms"]["min"] > 0 and row["computed_e2e_ms"] > 0
    runs = [c[-1] for c in adb_calls(state) if c[-2:-1] == ["shell"] and "./elasticdit-run" in c[-1]]
    assert len(runs) == 3 and "--op r1_d4 " in runs[0] and "--op r2_d2 " in runs[1]
    assert "--noise noise-0.npy --schedule r2_d2:0.5,r1_d4:0.5 --runs 2 --warmup 0 --json --steps 2" in runs[2]
