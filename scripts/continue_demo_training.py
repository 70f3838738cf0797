"""Diagnostic: continue a finished demo training run's DiT phase for more steps, with snapshots.

python scripts/continue_demo_training.py RUN_DIR --steps 2000 --every 500 [--points r2_d3,r4_d3] [--lr 2e-4]

RUN_DIR holds a finished `python -m elasticdit.demo.train --seed 0` run (its `state.pt` and `latents.pt`) and is
continued in place, with the run's own plan (scenes, batch sizes, learning rate): copy it first to keep the
original. The text encoder and ElasticDiT go on from the run's weights, optimizer state and EMA with a fresh
learning-rate schedule (warmup, constant, decay over the last 30%); every `--every` steps the EMA weights are
written to RUN_DIR/extra{STEP}.safetensors. This measures how the demo's score grows past the 60-minute training
budget; its checkpoints are not the shipped demo. `--points` trains only the named operating points, all of them
every step, in place of the sandwich rule (which points gain from more training, and what the others lose);
`--lr` sets the peak learning rate (default: the run's).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training command sets it

import torch

from elasticdit.demo.config import demo_config
from elasticdit.demo.plan import RESUME_MUST_MATCH, TrainPlan, check_saved
from elasticdit.demo.trainer import STATE_FILE, Trainer
from elasticdit.errors import OperatingPointError
from elasticdit.operating_points import OperatingPoint, select


class ContinuedRun(Trainer):
    only: list[OperatingPoint] | None = None  # the points every step trains; None: the run's sandwich rule

    def step_points(self, progress: float) -> list[OperatingPoint]:
        return self.only if self.only is not None else super().step_points(progress)

    def save_state(self) -> None:
        super().save_state()
        if self.phase == "dit":
            self.write_checkpoint(self.out / f"extra{self.step}.safetensors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0, help="the run's seed")
    parser.add_argument("--points", help="comma-separated operating points to train every step (default: sandwich)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the run's)")
    args = parser.parse_args(argv)
    if not (args.run / STATE_FILE).is_file():
        print(f"error: {args.run / STATE_FILE} not found: not a training run directory", file=sys.stderr)
        return 1
    saved = torch.load(args.run / STATE_FILE, weights_only=True, mmap=True)["plan"]  # the run's data and batches
    try:
        saved = check_saved(saved, RESUME_MUST_MATCH, str(args.run / STATE_FILE))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    plan = dataclasses.replace(TrainPlan(**saved), minutes=None, dit_steps=args.steps, save_every=args.every)
    if args.lr is not None:
        plan = dataclasses.replace(plan, dit_lr=args.lr)
    cfg = demo_config()
    run = ContinuedRun(args.run, cfg, plan, args.seed, log=lambda s: print(s, flush=True))
    if args.points:
        try:
            run.only = select(cfg, args.points.split(","))
        except OperatingPointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    run.load_state()
    if run.phase != "done":
        print(f"error: {args.run} has not finished training (phase {run.phase}); resume it instead", file=sys.stderr)
        return 1
    run.phase, run.step = "dit", 0
    run.train_dit()
    run.write_checkpoint(args.run / f"extra{run.step}.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
