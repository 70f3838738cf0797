"""Train the demo ElasticDiT on flat-shape scenes, on the CPU, in a fixed time budget (the command; the trainer
is demo/trainer.py, its plan demo/plan.py).

python -m elasticdit.demo.train --out DIR [--minutes M] [--seed S] [--resume]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from .plan import RATIO_PROJECTIONS, SANDWICHES, TrainPlan
from .shapes import CATEGORIES, LAYOUTS
from .trainer import train


def parse_assignments(items: list[str], usage: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    """["name=value", ...] -> {name: convert(value)}; a missing name or `=`, or a value `convert` refuses
    (ValueError), is the error `usage`, given the item."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            values[name.strip()] = convert(value)
        except ValueError:
            raise ValueError(f"{usage}, got {item!r}") from None
    return values


def unsigned_int(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(text)
    return int(text)


def parse_category_weights(items: list[str]) -> dict[str, int]:
    """["position=2", ...] -> {"position": 2}; the names and values are checked by TrainPlan."""
    return parse_assignments(items, "--category-weight wants CATEGORY=N with a positive integer N", unsigned_int)


def parse_pick_weights(items: list[str]) -> dict[str, float]:
    """["r1_d3=3", ...] -> {"r1_d3": 3.0}; the names are checked against the config by the Trainer."""
    return parse_assignments(items, "--pick-weight wants POINT=W with a number W", float)


def main(argv: list[str] | None = None, cfg: ModelConfig | None = None) -> int:
    """The training command; `cfg` (default `demo/config.py demo_config()`) is the design trained."""
    if "OMP_WAIT_POLICY" not in os.environ and argv is None:
        # Sleeping (not spinning) OpenMP workers: on a CPU shared with other jobs, spinning threads wait for
        # descheduled ones and a step runs several times slower. It must be set before torch loads OpenMP.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "elasticdit.demo.train", *sys.argv[1:]])
    parser = argparse.ArgumentParser(prog="python -m elasticdit.demo.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for state.pt, log.jsonl, demo.safetensors")
    parser.add_argument("--minutes", type=float, default=TrainPlan.minutes, help="wall-time budget of the run")
    parser.add_argument(
        "--steps",
        type=int,
        nargs=2,
        metavar=("VAE", "DIT"),
        default=None,
        help="fixed step counts instead of a time budget (exactly reproducible)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=TrainPlan.scenes, help="training scenes rendered")
    parser.add_argument(
        "--layout", choices=LAYOUTS, default=TrainPlan.layout, help="training scenes: canonical slots or free places"
    )
    parser.add_argument(
        "--sandwich",
        choices=SANDWICHES,
        default=TrainPlan.sandwich,
        help="points per step: full + lightest + one random ('three'), also one of every other ratio ('ratios') or "
        "every other ratio's lightest ('ratio-lightest')",
    )
    parser.add_argument(
        "--late-sandwich",
        choices=SANDWICHES,
        default=None,
        help="a curriculum: the sandwich from --late-from of the DiT phase on (default: --sandwich throughout)",
    )
    parser.add_argument(
        "--late-from",
        type=float,
        default=TrainPlan.late_from,
        help="share of the DiT phase (0 to 1) after which --late-sandwich applies",
    )
    parser.add_argument(
        "--late-pick-weight",
        action="append",
        default=[],
        metavar="POINT=W",
        help="like --pick-weight, for the late stage (repeatable)",
    )
    parser.add_argument(
        "--category-weight",
        action="append",
        default=[],
        metavar="CATEGORY=N",
        help=f"repeat a category N times in the scenes' cycle (categories: {', '.join(CATEGORIES)})",
    )
    parser.add_argument(
        "--uncovered-weight",
        type=float,
        default=TrainPlan.uncovered_weight,
        help="random pick's weight for points of a ratio neither the full nor the lightest point has (others: 1)",
    )
    parser.add_argument(
        "--pick-weight",
        action="append",
        default=[],
        metavar="POINT=W",
        help="the random pick's weight of one operating point, in place of the --uncovered-weight rule (repeatable)",
    )
    parser.add_argument(
        "--token-embedding-std",
        type=float,
        default=TrainPlan.token_embedding_std,
        help="initial std of the text encoder's token embedding (the position embedding's is 0.02)",
    )
    parser.add_argument(
        "--ratio-projections",
        choices=RATIO_PROJECTIONS,
        default=TrainPlan.ratio_projections,
        help="train each ratio's patch embedding and output projection on its own ('separate') or as ratio 1's "
        "resized plus a learned difference ('shared'); the checkpoint stores per-ratio tensors either way",
    )
    parser.add_argument(
        "--distill",
        type=float,
        default=TrainPlan.distill,
        help="in-place distillation: the other points' target is this much the full point's prediction (0 to 1)",
    )
    parser.add_argument("--threads", type=int, default=TrainPlan.threads)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    parser.add_argument(
        "--loss-balance", choices=["sum", "log"], default=TrainPlan.loss_balance, help="how the sandwich's losses add"
    )
    args = parser.parse_args(argv)
    try:  # a bad value is a one-line usage error, before anything is written
        plan = TrainPlan(
            minutes=args.minutes,
            scenes=args.scenes,
            layout=args.layout,
            threads=args.threads,
            loss_balance=args.loss_balance,
            sandwich=args.sandwich,
            category_weights=parse_category_weights(args.category_weight),
            uncovered_weight=args.uncovered_weight,
            pick_weights=parse_pick_weights(args.pick_weight),
            late_sandwich=args.late_sandwich,
            late_from=args.late_from,
            late_pick_weights=parse_pick_weights(args.late_pick_weight),
            token_embedding_std=args.token_embedding_std,
            ratio_projections=args.ratio_projections,
            distill=args.distill,
        )
    except ValueError as e:
        parser.error(str(e))
    if args.steps:
        plan = dataclasses.replace(plan, minutes=None, vae_steps=args.steps[0], dit_steps=args.steps[1])
    try:
        path = train(args.out, cfg, plan, seed=args.seed, resume=args.resume, log=lambda s: print(s, flush=True))
    except ValueError as e:  # a plan this config cannot take, or OUT holds another run: refused before writing
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
