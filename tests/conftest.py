"""Shared fixtures: small random checkpoints written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from elasticdit.checkpoint import save_checkpoint
from elasticdit.presets import random_weights, tiny_config

pytest_plugins = ["ci_skips"]
torch.set_num_threads(2)


def write_tiny(path: Path, seed: int = 0, **kwargs) -> Path:
    cfg = tiny_config(**kwargs)
    save_checkpoint(path, cfg, random_weights(cfg, seed))
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """Ratios 1/2 at 128 px (token grids 8x8 and 4x4), SSBA tile 2, text encoder, T-DVAE with encoder."""
    return write_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", text_encoder=True)


@pytest.fixture(scope="session")
def bare_ckpt(tmp_path_factory) -> Path:
    """The tiny transformer alone (no decoder, no text encoder): bundles of denoise methods only."""
    return write_tiny(tmp_path_factory.mktemp("bare") / "bare.safetensors", vae=False)
