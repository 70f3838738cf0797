"""adb transport: executor_runner output parsing, command lines, runner checks, and every error path against a
stand-in `adb` on PATH that answers the way the real client does (tests/data/fake_adb.py). No phone needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_profile_support import DATA, adb_calls, arm64_elf, install_fake_adb, real_etdump
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.errors import DeviceError
from elasticdit.profile.adb import check_runner, last_logcat_run, parse_devices, parse_runner_output, runner_command

runner = CliRunner()
PIXEL = {
    "serial": "37121FDJH004NX",
    "state": "device",
    "props": {"usb": "1-1", "product": "husky", "model": "Pixel_8_Pro", "device": "husky", "transport_id": "2"},
}
PROPS = {
    "ro.product.model": "Pixel 8 Pro",
    "ro.product.manufacturer": "Google",
    "ro.soc.manufacturer": "Google",
    "ro.soc.model": "Tensor G3",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
}


@pytest.fixture(scope="module")
def bundle(android_bundle):
    return android_bundle[0]


@pytest.fixture
def phone(tmp_path, bundle, tmp_path_factory):
    """Returns run(scenario, *args) -> (result, state dir): `elasticdit profile --device adb` against the fake."""

    def run(scenario: dict, *args: str):
        scenario = {
            "devices": [PIXEL],
            "props": PROPS,
            "etdump": str(real_etdump(tmp_path_factory, bundle)),
            **scenario,
        }
        state = tmp_path / "adb-state"
        env = install_fake_adb(tmp_path / "bin", state, scenario)
        argv = ["profile", str(bundle), "--runner", str(arm64_elf(tmp_path / "executor_runner")), *args]
        if "--device" not in args:
            argv += ["--device", "adb"]
        return runner.invoke(app, argv, env=env), state

    return run


# --- parsing real output formats (tests/data/README.md says where each line's format comes from) ----------


def test_parse_posix_pal_output_with_toybox_time():
    log = parse_runner_output((DATA / "executor_runner_posix.txt").read_text())
    assert log.load_ms == pytest.approx(17.861)
    assert log.iterations == pytest.approx([4.102, 2.488, 2.351, 2.379, 2.410])
    assert (log.executions, log.total_ms) == (5, pytest.approx(13.73))
    assert log.max_rss_kb == 48212 and log.error is None and log.unknown_flag is None


def test_parse_logcat_takes_the_newest_run():
    text = last_logcat_run((DATA / "executor_runner_logcat.txt").read_text())
    log = parse_runner_output(text)
    assert log.load_ms == pytest.approx(28.117) and log.iterations == pytest.approx([19.875, 18.002, 17.94])


def test_parse_older_runner_that_prints_only_the_total():
    log = parse_runner_output((DATA / "executor_runner_total_only.txt").read_text())
    assert log.load_ms is None and log.iterations == [] and (log.executions, log.total_ms) == (4, 111.305)


def test_parse_failures_name_the_fix():
    log = parse_runner_output((DATA / "executor_runner_operator_missing.txt").read_text())
    assert "Loading of method encode_text failed with status 0x14 (OperatorMissing)" in log.error
    assert "EXECUTORCH_BUILD_KERNELS_OPTIMIZED=ON" in log.error
    assert parse_runner_output((DATA / "executor_runner_no_etdump_flag.txt").read_text()).unknown_flag == "etdump_path"


def test_runner_command_line():
    cmd = runner_command(
        "/data/local/tmp/elasticdit-ab12", "model.pte", "denoise_r2_d2", 12, 4, "denoise_r2_d2.etdp", time_v=True
    )
    assert cmd == (
        "cd /data/local/tmp/elasticdit-ab12 && toybox time -v ./executor_runner --model_path=model.pte "
        "--method_name=denoise_r2_d2 --num_executions=12 --cpu_threads=4 --etdump_path=denoise_r2_d2.etdp"
    )
    plain = runner_command("/d", "model.pte", "decode", 1, None, None, drop_flags=frozenset({"cpu_threads"}))
    assert plain == "cd /d && ./executor_runner --model_path=model.pte --method_name=decode --num_executions=1"
    assert "--cpu_threads=-1" in runner_command("/d", "model.pte", "decode", 1, None, None)
    external = runner_command("/d", "model.pte", "decode", 1, None, None, data="model.ptd")  # --weights external
    assert external.startswith("cd /d && ./executor_runner --model_path=model.pte --data_path=model.ptd --method_name=")


def test_parse_adb_devices_listing():
    text = (
        "List of devices attached\n"
        "37121FDJH004NX         device usb:1-1 product:husky model:Pixel_8_Pro device:husky transport_id:2\n"
        "R5CX1234ABC            unauthorized usb:1-2 transport_id:3\n"
        "0123456789ABCDEF       no permissions (missing udev rules? user is in the plugdev group); see "
        "[http://developer.android.com/tools/device.html] usb:1-3 transport_id:4\n\n"
    )
    devs = parse_devices(text)
    assert [(d.serial, d.state) for d in devs] == [
        ("37121FDJH004NX", "device"),
        ("R5CX1234ABC", "unauthorized"),
        ("0123456789ABCDEF", "no permissions"),
    ]
    assert devs[0].props["model"] == "Pixel_8_Pro" and devs[0].props["transport_id"] == "2"


def test_runner_checks(tmp_path):
    assert check_runner(arm64_elf(tmp_path / "ok")) == tmp_path / "ok"
    with pytest.raises(DeviceError, match="pass --runner PATH"):
        check_runner(None)
    with pytest.raises(DeviceError, match="does not exist"):
        check_runner(tmp_path / "missing")
    script = tmp_path / "runner.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(DeviceError, match="not an ELF executable"):
        check_runner(script)
    # this host's own python is an x86-64 (or other non-arm64) ELF: the wrong ABI for a phone
    if Path(sys.executable).resolve().read_bytes()[:4] == b"\x7fELF":
        with pytest.raises(DeviceError, match="the phone needs arm64-v8a"):
            check_runner(Path(sys.executable).resolve())


# --- the whole transport against the stand-in adb ------------------------------------------------------------


def test_profile_over_adb(phone):
    result, state = phone(
        {"rss_kb": {"encode_text": 30000, "decode": 50000, "denoise_r1_d4": 70000}},
        "--runs",
        "3",
        "--warmup",
        "2",
        "--threads",
        "4",
        "--json",
    )
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    dev = report["device"]
    assert dev["kind"] == "adb" and dev["serial"] == PIXEL["serial"] and dev["name"] == "Pixel 8 Pro"
    assert dev["profile"] == "pixel-8-pro" and dev["soc"] == "Google Tensor G3" and dev["ram_mb"] == 11511
    point = report["operating_points"][0]
    # 5 untraced executions: the first 2 are warm-up, the runner printed 4.0, 2.1, 2.2, 2.3, 2.4 ms (the traced
    # run for the per-op breakdown prints 20% more: none of it may reach the timings)
    assert point["denoise_ms"]["all"] == pytest.approx([2.2, 2.3, 2.4])
    assert point["load_ms"] == {"first": 20.0, "warm": 12.5}
    assert point["peak_memory_mb"] == pytest.approx((30000 + 50000 + 70000) / 1024, abs=0.05)
    assert any(o["name"] == "Fully Connected (NC, F32) GEMM" and o["delegated"] for o in point["ops"])
    assert report["complete"] and report["decoder"]["ms"]["n"] == 3

    calls = adb_calls(state)
    serial_calls = [c[2:] for c in calls if c[:2] == ["-s", PIXEL["serial"]]]
    workdir = next(c[1].split()[-1] for c in serial_calls if c[0] == "shell" and c[1].startswith("mkdir -p"))
    assert workdir.startswith("/data/local/tmp/elasticdit-")
    pushes = [c[2] for c in serial_calls if c[0] == "push"]
    assert pushes == [f"{workdir}/executor_runner", f"{workdir}/model.pte"]
    runs = [c[1] for c in serial_calls if c[0] == "shell" and "./executor_runner" in c[1]]
    assert len(runs) == 3 * 4  # first, timed and traced run for encode_text, decode and both points
    assert (
        f"cd {workdir} && toybox time -v ./executor_runner --model_path=model.pte --method_name=denoise_r1_d4 "
        "--num_executions=5 --cpu_threads=4"
    ) in runs
    assert (
        f"cd {workdir} && ./executor_runner --model_path=model.pte --method_name=denoise_r1_d4 "
        "--num_executions=7 --cpu_threads=4 --etdump_path=denoise_r1_d4.etdp"
    ) in runs
    assert sum("--etdump_path" in r for r in runs) == 4  # only the per-op runs are traced
    assert ["pull", f"{workdir}/denoise_r1_d4.etdp"] == [c for c in serial_calls if c[0] == "pull"][2][:2]
    assert serial_calls[-1] == ["shell", f"rm -rf {workdir}"]
    assert not any((state / "fs" / workdir.lstrip("/")).parent.glob("elasticdit-*"))


@pytest.mark.parametrize(
    "scenario, device, message",
    [
        ({"devices": []}, "adb", "no Android device is connected (adb: no devices/emulators found)"),
        (
            {"devices": [PIXEL, dict(PIXEL, serial="R5CX1234ABC")]},
            "adb",
            "several Android devices are connected (37121FDJH004NX (Pixel_8_Pro), R5CX1234ABC (Pixel_8_Pro)): pick "
            "one with --device adb:SERIAL",
        ),
        (
            {"devices": [dict(PIXEL, state="unauthorized", props={})]},
            "adb",
            "is unauthorized: unlock the phone and accept the 'Allow USB debugging?' prompt",
        ),
        ({"devices": [dict(PIXEL, state="offline", props={})]}, "adb", "is offline: reconnect the cable"),
        ({}, "adb:WRONG123", "no device with serial WRONG123 is connected (connected: 37121FDJH004NX)"),
        ({"props": dict(PROPS, **{"ro.product.cpu.abi": "x86_64"})}, "adb", "the phone's ABI is x86_64"),
    ],
)
def test_device_errors_name_the_fix(phone, scenario, device, message):
    result, _state = phone(scenario, "--device", device)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert result.stdout == ""


def test_unauthorized_serial_uses_adbs_own_message(phone):
    # with -s, the real client answers `adb: device unauthorized.` + three help lines; we name the fix
    result, _ = phone({"devices": [dict(PIXEL, state="unauthorized", props={})]}, "--device", f"adb:{PIXEL['serial']}")
    assert result.exit_code == 1 and "unauthorized: unlock the phone" in result.stderr


def test_adb_missing(tmp_path, bundle):
    result = runner.invoke(
        app,
        ["profile", str(bundle), "--device", "adb", "--runner", str(arm64_elf(tmp_path / "r"))],
        env={"PATH": str(tmp_path), "ADB": ""},
    )
    assert result.exit_code == 1 and "adb not found: install Android platform-tools" in result.stderr


def test_wrong_abi_runner_is_refused_before_touching_the_phone(phone, tmp_path, bundle):
    x86 = tmp_path / "x86_runner"
    x86.write_bytes(
        b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + (2).to_bytes(2, "little") + (62).to_bytes(2, "little") + bytes(44)
    )
    env = install_fake_adb(tmp_path / "bin", tmp_path / "st", {"devices": [PIXEL], "props": PROPS})
    result = runner.invoke(app, ["profile", str(bundle), "--device", "adb", "--runner", str(x86)], env=env)
    assert result.exit_code == 1 and "built for x86-64 (64-bit), the phone needs arm64-v8a" in result.stderr
    assert not any(c[:1] == ["-s"] for c in adb_calls(tmp_path / "st"))


def test_device_gone_mid_run_keeps_what_was_measured(phone):
    # runner calls 1-6: encode_text and decode (3 each), 7-9: r1_d4; the phone disappears at call 10 (r2_d2)
    result, state = phone({"gone_after": 9}, "--runs", "2", "--warmup", "1", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["complete"] is False and report["missing"] == ["r2_d2"]
    assert [p["name"] for p in report["operating_points"]] == ["r1_d4"]
    assert "went away during `adb shell executor_runner`" in report["error"]
    assert "measured 1 of 2 operating points" in result.stderr
    assert adb_calls(state)[-1][-1].startswith("rm -rf /data/local/tmp/elasticdit-")  # cleanup was attempted


def test_hanging_device_times_out(phone):
    result, _ = phone({"hang": True}, "--timeout", "2")
    assert result.exit_code == 1
    assert "did not finish within 2 s: the phone or adb hangs" in result.stderr


def test_phone_without_toybox_time_has_no_memory_figure(phone):
    result, _ = phone({"time_v": False}, "--runs", "1", "--warmup", "0", "--no-op-breakdown", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["operating_points"][0]["peak_memory_mb"] is None
    assert any("toybox `time -v` is missing" in n for n in report["settings"]["notes"])


def test_no_op_breakdown_means_no_traced_run(phone):
    result, state = phone({}, "--runs", "2", "--warmup", "1", "--no-op-breakdown", "--json")
    assert result.exit_code == 0, result.stderr
    runs = [c[-1] for c in adb_calls(state) if "./executor_runner" in c[-1]]
    assert len(runs) == 2 * 4 and not any("--etdump_path" in r for r in runs)
    assert json.loads(result.stdout)["operating_points"][0]["denoise_ms"]["all"] == pytest.approx([2.1, 2.2])
