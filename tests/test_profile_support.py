"""Helpers shared by the profile tests (no tests here): one real ETDump per session, a fake adb, an arm64 ELF.
The tiny Android bundle they profile is conftest's session fixture `android_bundle`."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def real_etdump(tmp_path_factory: pytest.TempPathFactory, bundle: Path, method: str = "denoise_r2_d2") -> Path:
    """An ETDump written by the ExecuTorch runtime running one of the bundle's methods three times."""
    path = tmp_path_factory.getbasetemp() / f"{method}.etdp"
    if not path.exists():
        from elasticdit.bundle.reader import read_bundle
        from elasticdit.profile.host import inputs_for
        from elasticdit.targets.android.profile import ExecuTorchHost

        entry = read_bundle(bundle).manifest.method(method)
        (program, loaded), _ = ExecuTorchHost(bundle, None).load(entry, etdump=True)
        inputs = inputs_for(entry)
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
