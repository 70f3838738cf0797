"""Wall time of one demo training step (the sandwich rule's three networks, forward and backward) under each
OpenMP wait policy, `PASSIVE` (what `python -m elasticdit.demo.train` sets unless the variable is set) and
`ACTIVE`; with the matmuls in bfloat16 autocast (`TrainPlan.bf16`, the default) or float32; and with LayerNorm and
GELU spelled out as they are exported or as PyTorch's fused kernels (`TrainPlan.fused_kernels`, the default).

python benchmarks/train_step.py [--rounds 3] [--steps 10] [--threads 2] [--json PATH]

The policy is read once, when torch loads OpenMP, so each measurement is a fresh worker process; the variants
take turns round by round, in reverse order every other round, so that machine load falls on all alike. A step
is the demo config's r1_d6 + r4_d3 + r2_d4 on a batch of 32, as `Trainer.train_dit` runs it (without the
optimizer and EMA, which take under 1% of a step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name: (OMP_WAIT_POLICY, bf16 autocast, fused kernels); the first is how the shipped checkpoint trained, the
# ratios' base
VARIANTS = {
    "PASSIVE bf16 spelled-out": ("PASSIVE", True, False),
    "ACTIVE bf16 spelled-out": ("ACTIVE", True, False),
    "ACTIVE bf16 fused": ("ACTIVE", True, True),
    "ACTIVE fp32 fused": ("ACTIVE", False, True),
}
POINTS = ("r1_d6", "r4_d3", "r2_d4")


def worker(variant: str, steps: int, threads: int) -> float:
    """Median seconds per step in this process (started with the variant's wait policy), after 3 warm-up steps."""
    import torch

    from elasticdit.demo.config import demo_config
    from elasticdit.demo.plan import TrainPlan
    from elasticdit.demo.steps import training_net
    from elasticdit.demo.trainer import Trainer
    from elasticdit.operating_points import operating_points

    _, bf16, fused = VARIANTS[variant]
    cfg = demo_config()
    plan = TrainPlan(threads=threads, bf16=bf16, fused_kernels=fused)
    scratch = tempfile.TemporaryDirectory()  # the Trainer makes its output folder; a step writes nothing there
    trainer = Trainer(Path(scratch.name), cfg, plan, 0, lambda s: None)
    points = {q.name: q for q in operating_points(cfg)}
    nets = [training_net(trainer.models, points[name]) for name in POINTS]
    t = cfg.transformer
    x0 = torch.randn(32, t.in_channels, *cfg.latent_size())
    text, pooled = torch.randn(32, t.text_len, t.text_dim), torch.randn(32, t.pooled_dim)

    def step() -> None:
        with trainer.kernels():
            loss = sum(trainer.sandwich_losses(nets, x0, text, pooled))
        loss.backward()

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(variant: str, steps: int, threads: int) -> float:
    env = os.environ | {"OMP_WAIT_POLICY": VARIANTS[variant][0]}
    cmd = [sys.executable, __file__, "--worker", variant, "--steps", str(steps), "--threads", str(threads)]
    return float(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(worker(args.worker, args.steps, args.threads))
        return 0

    sys.path.insert(0, str(Path(__file__).parent))
    from common import print_table

    names = list(VARIANTS)
    runs: dict[str, list[float]] = {v: [] for v in names}
    for k in range(args.rounds):
        for variant in reversed(names) if k % 2 else names:
            runs[variant].append(measure(variant, args.steps, args.threads))
    medians = {v: statistics.median(r) for v, r in runs.items()}
    base = medians[names[0]]
    rows = [[v, medians[v], min(runs[v]), max(runs[v]), medians[v] / base] for v in names]
    print_table(["variant", "s/step (median)", "min", "max", f"vs {names[0]}"], rows)
    if args.json:
        report = {"points": POINTS, "threads": args.threads, "steps": args.steps, "variants": VARIANTS, "runs_s": runs}
        args.json.write_text(json.dumps(report | {"median_s": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
