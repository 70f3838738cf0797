"""Regenerate the embedded demo checkpoint (random weights from a fixed seed).

python scripts/make_demo_checkpoint.py [--out src/elasticdit/data/demo.safetensors]
"""

import argparse
from pathlib import Path

from elasticdit.demo_checkpoint import DEMO_SEED, write_random_demo

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "src/elasticdit/data/demo.safetensors")
parser.add_argument("--seed", type=int, default=DEMO_SEED)
args = parser.parse_args()
sha = write_random_demo(args.out, args.seed)
print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {sha})")
