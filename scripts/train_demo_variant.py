"""Diagnostic: train the demo with another latent width, patch size or SSBA tile, to compare designs.

python scripts/train_demo_variant.py --out DIR --latent-channels 3 --patch 4 --tile 2 --minutes 24
python scripts/train_demo_variant.py --out DIR --latent-channels 3 --steps 400 1500

Everything else is `python -m elasticdit.demo.train` with `demo/config.py demo_config()` (same data, recipe, sandwich
rule and time budget, and the same options: --out, --minutes, --steps, --resume, ...); only the named fields
change. Score the result with `elasticdit eval DIR/demo.safetensors`.
Its checkpoints are not the shipped demo (benchmarks/RESULTS.md, "Other demo designs tried").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training command sets it

from elasticdit.config import ModelConfig, check_resolution, validate_config
from elasticdit.demo.config import demo_config
from elasticdit.demo.train import main as train_command
from elasticdit.errors import ConfigError


def variant(base: ModelConfig, latent_channels: int | None, patch: int | None, tile: int | None) -> ModelConfig:
    t, v, s = base.transformer, base.vae, base.ssba
    if latent_channels is not None:
        t = dataclasses.replace(t, in_channels=latent_channels)
        v = dataclasses.replace(v, latent_channels=latent_channels)
    if patch is not None:
        t = dataclasses.replace(t, patch_size=patch)
    if tile is not None:
        s = dataclasses.replace(s, tile=tile)
    cfg = dataclasses.replace(base, transformer=t, vae=v, ssba=s)
    validate_config(cfg)
    check_resolution(cfg, cfg.resolution)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="Every other option is the training command's: python -m elasticdit.demo.train --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--latent-channels", type=int, help="T-DVAE latent channels (demo: 16)")
    parser.add_argument("--patch", type=int, help="base patch size (demo: 2)")
    parser.add_argument("--tile", type=int, help="SSBA tile in tokens (demo: 4)")
    args, training_args = parser.parse_known_args(argv)
    try:
        cfg = variant(demo_config(), args.latent_channels, args.patch, args.tile)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return train_command(training_args, cfg)


if __name__ == "__main__":
    sys.exit(main())
