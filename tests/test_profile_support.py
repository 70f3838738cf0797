"""Helpers shared by the profile tests (no tests here): one tiny Android bundle and one real ETDump per session."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elasticdit.cli import app

OPS = "r1_d4,r2_d2"
DATA = Path(__file__).parent / "data"


def android_bundle(tmp_path_factory: pytest.TempPathFactory, ckpt: Path) -> Path:
    """Exported once per session (about 40 s here) and shared by every profile test module."""
    root = tmp_path_factory.getbasetemp() / "profile-android-bundle"
    if not (root / "manifest.json").exists():
        result = CliRunner().invoke(
            app, ["export", str(ckpt), "--target", "android", "--ops", OPS, "-o", str(root), "--json"]
        )
        assert result.exit_code == 0, result.output + result.stderr
    return root


def real_etdump(tmp_path_factory: pytest.TempPathFactory, bundle: Path, method: str = "denoise_r2_d2") -> Path:
    """An ETDump written by the ExecuTorch runtime running one of the bundle's methods three times."""
    path = tmp_path_factory.getbasetemp() / f"{method}.etdp"
    if not path.exists():
        from elasticdit.manifest import read_manifest
        from elasticdit.profile.host import ExecuTorchHost, inputs_for

        manifest = read_manifest(bundle)
        entry = next(p for p in manifest["operating_points"] if p["method"] == method)
        host = ExecuTorchHost(bundle, manifest, None)
        (program, loaded), _ = host.load(entry, etdump=True)
        inputs = inputs_for("denoise", entry)
        for _ in range(3):
            loaded.execute(inputs)
        program.write_etdump(path)
    return path


def install_fake_adb(bin_dir: Path, state: Path, scenario: dict) -> dict[str, str]:
    """Put tests/data/fake_adb.py on a PATH as `adb`; returns the environment to run with."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "adb"
    exe.write_text(f"#!{sys.executable}\n" + (DATA / "fake_adb.py").read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (state / "scenario.json").write_text(json.dumps(scenario))
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_ADB_STATE": str(state)}
    return env


def adb_calls(state: Path) -> list[list[str]]:
    path = state / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def arm64_elf(path: Path) -> Path:
    """A file whose ELF header says 64-bit little-endian AArch64 (e_machine 183), as an NDK build's does."""
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + (2).to_bytes(2, "little") + (183).to_bytes(2, "little")
    path.write_bytes(header + bytes(64 - len(header)))
    path.chmod(0o755)
    return path
