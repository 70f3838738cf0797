"""The CI rule for skips (tests/ci_skips.py), shown on a throwaway test file run in a child pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = """
import pytest

def test_needs_a_service():
    pytest.skip("sshd is not installed")

@pytest.mark.host_specific("Core ML runs only on macOS")
def test_needs_macos():
    pytest.skip("not macOS")
"""


def run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "ELASTICDIT_CI"}
    env["PYTHONPATH"] = str(Path(__file__).parent)
    if ci:
        env["ELASTICDIT_CI"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "ci_skips", "-p", "no:cacheprovider", str(tmp_path)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_outside_ci_a_skip_is_printed_with_its_reason(tmp_path):
    done = run(tmp_path, ci=False)
    assert done.returncode == 0, done.stdout
    assert "2 skipped" in done.stdout and "sshd is not installed" in done.stdout


def test_in_ci_a_skip_fails_unless_the_test_is_host_specific(tmp_path):
    done = run(tmp_path, ci=True)
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 skipped" in done.stdout
    assert "skipped in CI, which provides what this test needs: sshd is not installed" in done.stdout
