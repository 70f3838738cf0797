"""What the memory tests share: a random checkpoint of a given config written to disk, and a fresh Python child
whose last line of output is its JSON report (a fresh process, so the peak resident memory is the child's own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from elasticdit.checkpoint import save_checkpoint
from elasticdit.config import ModelConfig
from elasticdit.model.pipeline import random_weights


def random_checkpoint(folder: Path, cfg: ModelConfig) -> tuple[Path, int]:
    """(path, bytes of the weights) of a checkpoint of `cfg` with seeded random weights, written in `folder`."""
    tensors = random_weights(cfg, 0)
    path = folder / "moderate.safetensors"
    save_checkpoint(path, cfg, tensors)
    return path, sum(t.numel() * t.element_size() for t in tensors.values())


def run_child(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run `code` in a fresh Python child with `args`; its last output line, parsed as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, check=False, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
