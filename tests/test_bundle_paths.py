"""Every command that reads a bundle confines its paths first: a manifest naming a file outside the bundle, or a
method file it does not hash, is refused (one line, exit 1) before any file is read, pushed or executed."""

from __future__ import annotations

import json
import shutil

import pytest
from test_profile_support import adb_calls, arm64_elf, install_fake_adb
from typer.testing import CliRunner

from elasticdit.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(android_bundle):
    return android_bundle[0]


def tampered(bundle, tmp_path, how: str):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    (tmp_path / "outside.pte").write_bytes((copy / "model.pte").read_bytes())
    if how == "dotdot":
        doc["files"][0]["path"] = "../outside.pte"
        for p in doc["operating_points"]:
            p["file"] = "../outside.pte"
    elif how == "absolute":
        doc["operating_points"][0]["file"] = str(tmp_path / "outside.pte")
    else:  # a method file that the hashed list does not hold
        shutil.copy(copy / "model.pte", copy / "unhashed.pte")
        doc["operating_points"][0]["file"] = "unhashed.pte"
    (copy / "manifest.json").write_text(json.dumps(doc))
    return copy


COMMANDS = {
    "verify": lambda b, t: ["verify", str(b)],
    "profile": lambda b, t: ["profile", str(b), "--no-memory"],
    "generate": lambda b, t: ["generate", str(b), "-p", "a red circle", "-o", str(t / "x.png")],
    "eval": lambda b, t: ["eval", str(b), "--prompts", "1"],
}


@pytest.mark.parametrize("how", ["dotdot", "absolute", "unhashed"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_paths_outside(bundle, tmp_path, command, how):
    bad = tampered(bundle, tmp_path, how)
    result = runner.invoke(app, COMMANDS[command](bad, tmp_path))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    wanted = {"dotdot": "not a normalized path", "absolute": "is an absolute path", "unhashed": "does not hold"}[how]
    assert wanted in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_adb_pushes_nothing_from_a_bundle_that_names_outside_files(bundle, tmp_path):
    bad = tampered(bundle, tmp_path, "dotdot")
    env = install_fake_adb(tmp_path / "bin", tmp_path / "state", {"devices": [], "props": {}})
    argv = ["profile", str(bad), "--device", "adb", "--runner", str(arm64_elf(tmp_path / "executor_runner"))]
    result = runner.invoke(app, argv, env=env)
    assert result.exit_code == 1 and "not a normalized path inside the bundle" in result.stderr
    assert not any(call[:1] == ["push"] or call[2:3] == ["push"] for call in adb_calls(tmp_path / "state"))


def test_the_untampered_copy_passes(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    argv = ["generate", str(copy), "-p", "a red circle", "-o", str(tmp_path / "x.png"), "--steps", "1"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output + result.stderr
    assert (tmp_path / "x.png").is_file()
