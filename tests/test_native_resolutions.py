"""Several resolutions in one bundle (docs/design.md, "resolutions") run by elasticdit-run: `--resolution HxW` picks
the `denoise_<point>_<H>x<W>` and `decode_<H>x<W>` methods, the image equals the Python path's at that resolution,
every resolution's method equals the Python runtime's, and a resolution the bundle lacks is a named error."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from test_native_support import PROMPT, assert_methods_equal, compare_images, export, png
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.native.errors import NativeRunError

cli = CliRunner()
WIDE = "128x192"


@pytest.fixture(scope="module")
def multi(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint's dense point at its 128x128 (the default) and at 128x192."""
    out = tmp_path_factory.getbasetemp() / "android-multi"
    return export(tiny_ckpt, out, "--ops", "r2_d2", "--resolution", "128x128", "--resolution", WIDE)


def generate_both(bundle, tmp_path, extra: list[str]):
    base = ["generate", str(bundle), "--prompt", PROMPT, "--seed", "5", "--steps", "2", "--json", *extra]
    py = cli.invoke(app, [*base, "-o", str(tmp_path / "python.png")])
    assert py.exit_code == 0, py.output + py.stderr
    nat = cli.invoke(app, [*base, "--runner", "native", "-o", str(tmp_path / "native.png")])
    assert nat.exit_code == 0, nat.output + nat.stderr
    return png(tmp_path / "python.png"), png(tmp_path / "native.png"), json.loads(nat.stdout)


@pytest.mark.parametrize("resolution", [None, WIDE])
def test_native_image_at_each_resolution_equals_generate(native, multi, tmp_path, resolution):
    extra = [] if resolution is None else ["--resolution", resolution]
    py, nat, summary = generate_both(multi, tmp_path, extra)
    h, w = (128, 128) if resolution is None else (128, 192)
    assert py.shape == nat.shape == (h, w, 3) and summary["resolution"] == [h, w]
    figures = compare_images(py, nat)
    assert figures["psnr_db"] >= 45 and figures["within_1_lsb"] >= 0.99, figures
    t = summary["timings"]
    assert t["image"] == {"height": h, "width": w}
    suffix = "" if resolution is None else f"_{resolution}"
    assert set(t["load_ms"]["first"]["methods"]) == {"encode_text", f"denoise_r2_d2{suffix}", f"decode{suffix}"}


def test_every_method_of_every_resolution_equals_the_python_runtime(native, multi, tmp_path):
    from elasticdit.targets.android.runtime import ExecuTorchProgram

    index = native.methods(multi, tmp_path)
    names = [m["method"] for m in index["methods"]]
    assert names == ["encode_text", "denoise_r2_d2", f"denoise_r2_d2_{WIDE}", "decode", f"decode_{WIDE}"]
    program = ExecuTorchProgram(multi / "model.pte")
    assert_methods_equal(index, tmp_path, program.run)
    assert np.load(tmp_path / f"decode_{WIDE}.out0.npy").shape == (1, 3, 128, 192)


def test_the_noise_must_be_the_chosen_resolutions_latent(native, multi, tmp_path):
    noise = tmp_path / "noise.npy"
    np.save(noise, np.zeros((1, 16, 16, 16), np.float32))  # 128x128's latent
    with pytest.raises(NativeRunError) as info:
        native.run("generate", str(multi), "--prompt", PROMPT, "--noise", str(noise), "--resolution", WIDE)
    assert info.value.kind == "ShapeError" and "the noise must be float32 [1, 16, 16, 24]" in info.value.message


@pytest.mark.parametrize(
    "value, message",
    [
        ("64x64", "the bundle has no methods for 64x64; it has 128x128, 128x192"),
        ("128", "--resolution takes HEIGHTxWIDTH in pixels (e.g. 1024x1024), got '128'"),
        ("0x128", "got '0x128'"),
    ],
)
def test_a_resolution_the_bundle_lacks_is_a_named_error(native, multi, tmp_path, value, message):
    noise = tmp_path / "noise.npy"
    np.save(noise, np.zeros((1, 16, 16, 24), np.float32))
    args = ["generate", str(multi), "--prompt", PROMPT, "--noise", str(noise), "--resolution", value]
    done = subprocess.run([str(native.binary), *args], capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: UsageError: "), lines
    assert message in lines[0], lines
    with pytest.raises(NativeRunError) as info:
        native.run("schedule", str(multi), "--schedule", "r2_d2", "--resolution", value)
    assert info.value.kind == "UsageError" and message in info.value.message
    # `generate --runner native` names it before starting the runner, as the Python path does
    result = cli.invoke(
        app, ["generate", str(multi), "-p", PROMPT, "--runner", "native", "--resolution", "64x64", "-o", "x.png"]
    )
    assert result.exit_code == 1 and "has no methods for 64x64; it has 128x128, 128x192" in result.stderr


def test_profile_through_the_runner_measures_that_resolutions_methods(native, multi):
    """`profile --runner native --resolution HxW`: elasticdit-run is given the resolution, so the methods it loads
    and times (its load figures name them) are that resolution's, and the report says so."""
    args = ["profile", str(multi), "--runner", "native", "--runs", "1", "--warmup", "0", "--json"]
    reports = {}
    for at in (None, WIDE):
        result = cli.invoke(app, [*args, *([] if at is None else ["--resolution", at])])
        assert result.exit_code == 0, result.output + result.stderr
        reports[at] = json.loads(result.stdout)
    for at, suffix, shape in ((None, "", [128, 128]), (WIDE, f"_{WIDE}", [128, 192])):
        report = reports[at]
        assert report["resolution"] == shape
        (row,) = report["operating_points"]
        assert row["method"] == f"denoise_r2_d2{suffix}" and report["decoder"]["method"] == f"decode{suffix}"
        # measured, not only named: the runner's timings hold a load of exactly these methods
        assert row["load_ms"]["first"] > 0 and report["decoder"]["load_ms"]["first"] > 0, (row, report["decoder"])
        assert row["e2e_measured_ms"]["n"] == 1


def test_profile_over_adb_passes_the_resolution_to_the_runner(native, multi, tmp_path):
    from test_native_adb import profile
    from test_profile_adb import PIXEL
    from test_profile_support import adb_calls

    result, state = profile(tmp_path, multi, native, {}, "--runs", "1", "--warmup", "0", "--resolution", WIDE)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["resolution"] == [128, 192]
    assert report["operating_points"][0]["method"] == f"denoise_r2_d2_{WIDE}"
    assert report["decoder"]["method"] == f"decode_{WIDE}" and report["decoder"]["load_ms"]["first"] > 0
    calls = [c[2:] for c in adb_calls(state) if c[:2] == ["-s", PIXEL["serial"]]]
    runs = [c[1] for c in calls if c[0] == "shell" and "./elasticdit-run" in c[1]]
    assert len(runs) == 1 and f"--op r2_d2 --resolution {WIDE} --runs 1" in runs[0], runs


def test_profile_over_adb_with_executor_runner_runs_that_resolutions_methods(multi, tmp_path):
    """`profile --device adb --resolution HxW` with ExecuTorch's executor_runner: the methods pushed and run on the
    phone are that resolution's, by name."""
    from test_profile_adb import PIXEL, PROPS
    from test_profile_support import adb_calls, arm64_elf, install_fake_adb

    env = install_fake_adb(tmp_path / "bin", tmp_path / "state", {"devices": [PIXEL], "props": PROPS})
    argv = ["profile", str(multi), "--device", "adb", "--runner", str(arm64_elf(tmp_path / "executor_runner"))]
    result = cli.invoke(
        app, [*argv, "--runs", "1", "--warmup", "0", "--no-op-breakdown", "--resolution", WIDE, "--json"], env=env
    )
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["resolution"] == [128, 192] and report["decoder"]["method"] == f"decode_{WIDE}"
    assert [p["method"] for p in report["operating_points"]] == [f"denoise_r2_d2_{WIDE}"]
    shell = [c[3] for c in adb_calls(tmp_path / "state") if c[2:3] == ["shell"] and "./executor_runner" in c[3]]
    methods = {part.split("=", 1)[1] for c in shell for part in c.split() if part.startswith("--method_name=")}
    assert methods == {"encode_text", f"decode_{WIDE}", f"denoise_r2_d2_{WIDE}"}, shell
