"""The demo checkpoint shipped inside the package, so every command runs on a fresh install.

`data/demo.safetensors` is a trained ElasticDiT (`demo_config()`: 128 px flat-shape scenes in slot layouts,
9 operating points, SSBA, T-DVAE with encoder, text encoder), made by `python -m elasticdit.demo.train --out DIR
--minutes 55 --seed 0` on 2 CPU cores and copied from DIR/demo.safetensors (see docs/demo.md and
scripts/make_demo_checkpoint.py). `write_random_demo` writes the same architecture with random weights in
seconds, for toolchain tests that need no trained weights.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from .checkpoint import save_checkpoint
from .demo.config import demo_config
from .errors import CheckpointError
from .model.pipeline import random_weights

DEMO_FILE = "demo.safetensors"
DEMO_SEED = 20261127


def demo_checkpoint_path() -> Path:
    path = Path(str(resources.files("elasticdit") / "data" / DEMO_FILE))
    if not path.is_file():
        raise CheckpointError(f"the demo checkpoint is missing from the installation ({path})")
    return path


def write_random_demo(path: str | Path, seed: int = DEMO_SEED) -> str:
    """Random weights under a fixed seed, stored as float16 to stay small; returns the sha256."""
    cfg = demo_config()
    tensors = {k: v.to(torch.float16) for k, v in random_weights(cfg, seed).items()}
    return save_checkpoint(path, cfg, tensors)
