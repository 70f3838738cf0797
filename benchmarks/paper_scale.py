"""One whole denoise step of the paper-scale preset at ratio 1, SSBA kernel vs dense attention (issue 24).

`paper_scale_config()` (tests/configs.py): width 1536 (24 heads of 64), 24 blocks, 1024 px -> a 64 x 64 token grid at
ratio 1, SSBA tile 8 window 1, 77 text tokens; random weights (PyTorch's initialisation, seed 0, the same
in every variant), float32, batch 1. Each variant is the full operating point r1_d24 exported with one
attention lowering (`dense`: bmm/softmax/bmm delegated to XNNPACK; `kernel`: elasticdit::ssba_attention on
the sparse layers; optionally `tiles`), lowered to XNNPACK, and run in executorch.runtime.

Memory: the model is ~8 GB of float32 weights, so every export and every timing run is its own child
process (one model or one loaded program at a time: XNNPACK packs its own copy of the weights at load).
Timing rounds alternate the variants (a fresh child per variant per round: load, one warm-up step, `--runs`
timed steps); the median of all timed steps per variant is reported with the machine's load average.
`--blocks N` times the first N blocks only (a quick look; the target is about the whole step, N = 24).
`--quantize 8da4w` quantizes the transformer's linear layers as the android-8da4w recipe does (torchao, int4 weights
in groups of the recipe's size, dynamic int8 activations; output projections int8) before either variant is sliced
and exported: the step of the recipe that ships to phones, where the linear layers cost less and attention weighs more.

    nice -n 10 python benchmarks/paper_scale.py --json paper_scale.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent / "tests"))  # the paper-scale preset lives with the test configs
from common import print_table, run_worker

TARGET = 0.6  # the step with the kernel <= 0.6 x the step with dense attention


def paper_config(blocks: int):
    from configs import paper_scale_config

    from elasticdit.config import ElasticConfig

    cfg = paper_scale_config()
    if blocks != cfg.transformer.num_blocks:
        cfg = dataclasses.replace(
            cfg,
            transformer=dataclasses.replace(cfg.transformer, num_blocks=blocks),
            elastic=ElasticConfig(compression_ratios=(1,), depths={str(blocks): tuple(range(blocks))}),
        )
    return cfg


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def export_worker(variant: str, blocks: int, path: Path, quantize: str) -> dict:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from elasticdit.model.elastic_dit import ElasticDiT
    from elasticdit.model.pipeline import Models
    from elasticdit.operating_points import OperatingPoint
    from elasticdit.slicing import denoise_unit
    from elasticdit.targets.android.export import delegation_of

    cfg = paper_config(blocks)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    models = Models(cfg=cfg, transformer=ElasticDiT(cfg).eval())
    if quantize == "8da4w":
        from elasticdit.quant.xnnpack import quantize_8da4w
        from elasticdit.targets import target_recipe

        quantize_8da4w(models.transformer, target_recipe("android-8da4w", "android").group_size)
    point = OperatingPoint(1, str(blocks), tuple(range(blocks)))
    unit = denoise_unit(models, point, cfg.resolution, variant, 1)
    with torch.no_grad():
        program = torch.export.export(unit.module, unit.example_inputs)
    edge = to_edge_transform_and_lower(
        program, partitioner=[XnnpackPartitioner()], compile_config=EdgeCompileConfig(_check_ir_validity=False)
    )
    outside = delegation_of(edge.exported_program().graph_module).outside_ops
    del program, unit, models
    with open(path, "wb") as f:
        edge.to_executorch().write_to_file(f)
    return {"export_s": time.perf_counter() - t0, "outside_ops": outside, "peak_rss_gb": peak_rss_gb()}


def time_worker(path: Path, blocks: int, runs: int, threads: int) -> dict:
    import torch

    from elasticdit.kernels.build import load_kernels
    from elasticdit.specs import TensorSpec, example_inputs
    from elasticdit.targets.android.runtime import ExecuTorchProgram

    load_kernels()
    cfg = paper_config(blocks)
    t, (h, w) = cfg.transformer, cfg.latent_size()
    specs = [
        TensorSpec("latent", [1, t.in_channels, h, w]),
        TensorSpec("timestep", [1]),
        TensorSpec("text", [1, t.text_len, t.text_dim]),
        TensorSpec("pooled", [1, t.pooled_dim]),
    ]
    inputs = [x.contiguous() for x in example_inputs(specs, 0)]
    t0 = time.perf_counter()
    program = ExecuTorchProgram(path, threads)
    method = program.load("forward")
    load_s = time.perf_counter() - t0
    method.execute(inputs)  # warm-up
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = method.execute(inputs)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)  # all threads' CPU time: less sensitive to a loaded machine
    finite = bool(torch.isfinite(out[0]).all())
    return {"load_s": load_s, "step_s": times, "cpu_s": cpu, "finite": finite, "peak_rss_gb": peak_rss_gb()}


def child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(args)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"worker {args[0]} failed (exit {result.returncode}):\n" + "\n".join(tail))
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="dense,kernel", help="attention lowerings, comma-separated")
    parser.add_argument("--blocks", type=int, default=24, help="first N blocks (24: the whole step)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (a fresh load each)")
    parser.add_argument("--runs", type=int, default=2, help="timed steps per round after one warm-up step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quantize", choices=["none", "8da4w"], default="none", help="the linear layers' numerics")
    parser.add_argument("--workdir", type=Path, help="keep the .pte files here (default: a temporary folder)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(
            args.worker,
            {
                "export": lambda variant, blocks, pte, quantize: export_worker(
                    variant, int(blocks), Path(pte), quantize
                ),
                "time": lambda pte, blocks, runs, threads: time_worker(Path(pte), int(blocks), int(runs), int(threads)),
            },
        )
        return

    variants = args.variants.split(",")
    suffix = "" if args.quantize == "none" else f"_{args.quantize}"
    load = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="paper-scale-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        exports = {}
        for v in variants:
            pte = work / f"{v}_b{args.blocks}{suffix}.pte"
            if pte.is_file():
                exports[v] = {"reused": str(pte)}
                continue
            print(f"exporting {v} ({args.blocks} blocks) ...", flush=True)
            exports[v] = child(["export", v, str(args.blocks), str(pte), args.quantize])
            print(f"  {exports[v]['export_s']:.0f} s, peak RSS {exports[v]['peak_rss_gb']:.1f} GB", flush=True)
        runs: dict[str, list] = {v: [] for v in variants}
        for r in range(args.rounds):
            for v in variants if r % 2 == 0 else variants[::-1]:
                print(f"round {r + 1}: {v} ...", flush=True)
                pte = str(work / f"{v}_b{args.blocks}{suffix}.pte")
                runs[v].append(child(["time", pte, args.blocks, args.runs, args.threads]))
    steps = {v: [s * 1000 for run in runs[v] for s in run["step_s"]] for v in variants}
    cpu = {v: statistics.median([s * 1000 for run in runs[v] for s in run["cpu_s"]]) for v in variants}
    med = {v: statistics.median(steps[v]) for v in variants}
    dense = med.get("dense")
    rows = [
        [v, med[v], min(steps[v]), max(steps[v]), med[v] / dense if dense else 0.0, cpu[v], cpu[v] / cpu[variants[0]]]
        for v in variants
    ]
    print(
        f"\npaper-scale step, r1 (64x64 tokens + 77 text), {args.blocks} blocks, linear layers {args.quantize}, "
        f"{args.threads} threads; load average "
        f"{load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print_table(["variant", "median ms", "min", "max", "x dense", "CPU ms (all threads)", f"CPU x {variants[0]}"], rows)
    result = {
        "blocks": args.blocks,
        "quantize": args.quantize,
        "threads": args.threads,
        "rounds": args.rounds,
        "runs_per_round": args.runs,
        "load_average_start": load,
        "load_average_end": list(os.getloadavg()),
        "step_ms": med,
        "step_cpu_ms": cpu,
        "step_ms_all": steps,
        "exports": exports,
        "timing_children": runs,
    }
    if dense and "kernel" in med:
        ratio = med["kernel"] / dense
        result.update(kernel_over_dense=ratio, target=TARGET, target_met=ratio <= TARGET)
        print(f"target kernel step <= {TARGET} x dense step: {ratio:.3f} -> {'met' if ratio <= TARGET else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
