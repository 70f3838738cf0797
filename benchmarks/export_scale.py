"""What exporting the paper-scale model costs, per recipe: wall time, peak resident memory, bundle bytes (issue 25).

The model: `paper_scale_config()` (tests/configs.py: width 1536, 24 blocks, 1024 px, ratios 1/2/4 x depth plans
24/16/12 = 9 operating points, SSBA tile 8 window 1; ~2 B parameters, ~8 GB of float32) with seeded random weights
(`random_weights(cfg, 0)`), saved as a v1 checkpoint (`save_checkpoint`, `--dtype fp32|bf16`) by a child process.
`--blocks N` is a reduced-depth variant for quick looks: the preset with N blocks, its three depth plans scaled to
max(1, round(d * N / 24)) blocks each (the first half and the last half of the blocks, as the preset's 16 and 12
keep its first and last 8 and 6) and named by their block count (N = 4: plans 4, 3, 2 -> r1_d4 ... r4_d2); the
JSON's `model` says exactly which.

Each recipe is exported by `elasticdit.exporter.export_bundle` (what `elasticdit export` runs) in its own child
process, one at a time, with `--ops` (default all points). The child logs, per stage (loading the checkpoint,
building the networks, slicing, counting costs, then the exporter's own progress stages: quantizing, torch.export
per method, lowering to XNNPACK / Core ML conversion and compression / ONNX conversion and quantization, the
manifest), its wall time and its peak resident memory: the kernel's VmHWM, read and reset (/proc/self/clear_refs)
at each stage boundary, so each stage's peak is its own. A child's peak is the largest stage peak (libraries
included; the `imports` stage is the baseline). The parent samples the child's VmRSS every 0.5 s (a lower bound,
and what counts when the child dies) and kills it above `--rss-cap-gib` (default: 20 GiB, the issue's limit, or
what the machine had available at its start less 1.5 GiB, whichever is lower: this machine is shared) or at
`--stop-at` (UTC HH:MM). A child killed, refused or failing is a result (its status and the error's first line).

`--alone` also exports the heaviest point alone per recipe (bytes all / one). Large files live under `--workdir`
(default /tmp/scale-XXXX) and are deleted at the end (bundles as soon as they are measured) unless `--keep`.

    nice -n 10 python benchmarks/export_scale.py --blocks 4 --alone --json /tmp/scale-b4.json
    nice -n 10 python benchmarks/export_scale.py --recipes android-8da4w --json /tmp/scale-b24.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent / "tests"))  # the paper-scale preset lives with the test configs
from common import mem_available, print_table, run_child, run_worker, seconds_until

GIB = 2**30
RECIPES = "android-8da4w,android-int8,ios-palettize4,ios-int8,onnx-int8"
TARGET_RATIO = 1.5  # the goals: peak RSS <= 1.5 x the fp32 weight bytes, never above 20 GiB
TARGET_CAP = 20 * GIB
HEAVY_LIBS = {
    "android": ("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner", "torchao"),
    "ios": ("coremltools",),
    "onnx": ("onnx", "onnxruntime", "onnxruntime.quantization"),
}


def scaled_depths(blocks: int) -> dict[str, tuple[int, ...]]:
    """The preset's depth plans (24: all; 16, 12: first half + last half) scaled to `blocks` blocks."""
    plans: dict[str, tuple[int, ...]] = {str(blocks): tuple(range(blocks))}
    for depth in (16, 12):
        k = max(1, round(depth * blocks / 24))
        first = math.ceil(k / 2)
        plans.setdefault(str(k), tuple(range(first)) + tuple(range(blocks - (k - first), blocks)))
    return plans


def paper_config(blocks: int):
    from configs import paper_scale_config

    cfg = paper_scale_config()
    if blocks == cfg.transformer.num_blocks:
        return cfg
    return dataclasses.replace(
        cfg,
        transformer=dataclasses.replace(cfg.transformer, num_blocks=blocks),
        elastic=dataclasses.replace(cfg.elastic, depths=scaled_depths(blocks)),
    )


def describe_model(blocks: int) -> dict:
    from elasticdit.model.pipeline import expected_tensors
    from elasticdit.operating_points import operating_points

    cfg = paper_config(blocks)
    params = sum(math.prod(s) for s in expected_tensors(cfg).values())
    return {
        "preset": "tests/configs.py paper_scale_config()" + ("" if blocks == 24 else f", reduced to {blocks} blocks"),
        "blocks": blocks,
        "width": cfg.transformer.hidden_size,
        "resolution": list(cfg.resolution),
        "ratios": list(cfg.elastic.compression_ratios),
        "depth_plans": {k: list(v) for k, v in cfg.elastic.depths.items()},
        "points": [p.name for p in operating_points(cfg)],
        "parameters": params,
        "fp32_weight_bytes": 4 * params,
    }


# ---------------------------------------------------------------- child side


def status() -> dict[str, int]:
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in f) if k in keys}


class StageLog:
    """Per stage: seconds and peak VmHWM (reset at each boundary), appended to a JSON-lines file as it goes."""

    def __init__(self, path: Path):
        self.path, self.t0 = path, time.perf_counter()
        self.name, self.start = "imports", self.t0
        self.stages: list[dict] = []

    def enter(self, name: str) -> None:
        if name == self.name:
            return
        now, s = time.perf_counter(), status()
        record = {"stage": self.name, "start_s": round(self.start - self.t0, 2), "seconds": round(now - self.start, 2)}
        record.update(peak_rss=s["VmHWM"], rss_end=s["VmRSS"], anon_end=s["RssAnon"], file_end=s["RssFile"])
        self.stages.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps({**record, "next": name}) + "\n")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM restarts from the current resident set: the next peak is the next stage's
        self.name, self.start = name, now


def instrument(log: StageLog) -> None:
    """Stage marks around the exporter's steps before its progress bar, and its progress stages themselves."""
    from contextlib import contextmanager

    from elasticdit import checkpoint, exporter, progress

    def marked(name, fn):
        def wrapper(*args, **kwargs):
            log.enter(name)
            return fn(*args, **kwargs)

        return wrapper

    exporter.load_checkpoint = marked("load checkpoint", exporter.load_checkpoint)
    checkpoint.Checkpoint.models = marked("build networks", checkpoint.Checkpoint.models)
    exporter.export_units = marked("slice units", exporter.export_units)
    exporter.point_entry = marked("count costs (per point, on fake tensors)", exporter.point_entry)

    class Logged(progress.Reporter):
        def stage(self, text: str) -> None:
            log.enter(text)

    @contextmanager
    def reporter(total, enabled=None):
        yield Logged(None, total)

    exporter.reporter = reporter


def export_worker(ckpt: str, target: str, recipe: str, ops: list[str] | None, out: str, log_path: str) -> dict:
    import importlib

    import torch  # noqa: F401 (imported before the baseline, as the libraries below)

    from elasticdit import exporter

    for name in HEAVY_LIBS[target]:
        importlib.import_module(name)
    log = StageLog(Path(log_path))
    instrument(log)
    log.enter("start")
    try:
        summary = exporter.export_bundle(
            exporter.ExportRequest(checkpoint=Path(ckpt), target=target, output=Path(out), recipe=recipe, ops=ops)
        )
    finally:
        log.enter("done")  # closes the last stage, also when the export failed there
    return {"bytes": summary["bytes"], "files": len(summary["files"]), "methods": summary["methods"]}


def checkpoint_worker(path: str, blocks: int, dtype: str) -> dict:
    import torch

    from elasticdit.checkpoint import save_checkpoint
    from elasticdit.model.pipeline import random_weights

    t0 = time.perf_counter()
    cfg = paper_config(blocks)
    tensors = random_weights(cfg, 0)
    fp32_bytes = sum(4 * t.numel() for t in tensors.values())
    built = status()["VmHWM"]
    if dtype == "bf16":
        for name in list(tensors):  # one tensor at a time: the float32 one is dropped as its copy is made
            tensors[name] = tensors[name].to(torch.bfloat16)
    sha = save_checkpoint(path, cfg, tensors)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_building": built,
        "peak_rss": status()["VmHWM"],
        "fp32_weight_bytes": fp32_bytes,
        "file_bytes": Path(path).stat().st_size,
        "sha256": sha,
    }


# ---------------------------------------------------------------- parent side


MEASURED = (
    "peak_rss: the largest of the child's per-stage VmHWM (read and reset via /proc/self/clear_refs at each stage "
    "boundary; libraries included) and the parent's 0.5 s samples of its VmRSS; baseline_rss: VmRSS after imports"
)


def machine() -> dict:
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal"))
    return {"cpus": os.cpu_count(), "mem_total": total, "mem_available": mem_available()}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_one(
    ckpt: Path, recipe: str, ops: list[str] | None, workdir: Path, cap_gib: float, stop_at, keep: Path | None = None
) -> dict:
    """Export in a child, measured; the bundle is deleted once measured unless `keep` (its folder) is given."""
    target = recipe.split("-")[0]
    bundle, log = keep or workdir / f"bundle-{recipe}", workdir / f"stages-{recipe}-{time.monotonic_ns()}.jsonl"
    cap = int(min(cap_gib * GIB, mem_available() - 1.5 * GIB))
    load = os.getloadavg()
    args = ["export", str(ckpt), target, recipe, ops, str(bundle), str(log)]
    result = run_child(__file__, args, workdir, cap, stop_at)
    stages = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    log.unlink(missing_ok=True)
    if bundle.is_dir():
        result.setdefault("bytes", dir_bytes(bundle))
        if keep is None:
            shutil.rmtree(bundle)
    base = next((s["rss_end"] for s in stages if s["stage"] == "imports"), 0)
    peak = max([s["peak_rss"] for s in stages] + [result["sampled_peak_rss"]])
    heaviest = max(stages[1:], key=lambda s: s["peak_rss"], default=None)
    reached = stages[-1]["next"] if stages else "imports"
    if heaviest is None or result["sampled_peak_rss"] > 1.01 * heaviest["peak_rss"]:  # a child killed there
        heaviest = {"stage": f"{stages[-1]['stage'] if reached == 'done' else reached} (sampled)"}
    return {
        "recipe": recipe,
        "ops": ops or "all",
        **result,
        "rss_cap": cap,
        "load_average_start": list(load),
        "load_average_end": list(os.getloadavg()),
        "peak_rss": peak,
        "baseline_rss": base,
        "peak_stage": heaviest["stage"] if heaviest else None,
        "last_stage": reached,
        "stages": stages,
    }


def write_checkpoint(path: Path, blocks: int, dtype: str, workdir: Path) -> dict:
    if path.is_file():
        return {"reused": str(path), "file_bytes": path.stat().st_size}
    print(f"writing the {blocks}-block {dtype} checkpoint to {path} ...", flush=True)
    result = run_child(__file__, ["checkpoint", str(path), blocks, dtype], workdir, mem_available() - GIB, None)
    if result["status"] != "ok":
        raise SystemExit(f"writing the checkpoint failed: {result.get('error')}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=24, help="transformer blocks (24: the preset; fewer: a look)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="the checkpoint's tensors")
    parser.add_argument("--recipes", default=RECIPES, help="comma-separated, one child each, in this order")
    parser.add_argument("--ops", help="comma-separated operating points (default: all)")
    parser.add_argument("--alone", action="store_true", help="also export the heaviest point alone (bytes all/one)")
    parser.add_argument("--rss-cap-gib", type=float, default=20.0, help="kill a child above this (see above)")
    parser.add_argument("--stop-at", help="UTC HH:MM: kill a running child then and skip the rest")
    parser.add_argument("--workdir", type=Path, help="for the checkpoint and bundles (default /tmp/scale-XXXX)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint (reused by a later run)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, {"export": export_worker, "checkpoint": checkpoint_worker})
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scale-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = describe_model(args.blocks)
    weights = model["fp32_weight_bytes"]
    ckpt = workdir / f"paper_b{args.blocks}_{args.dtype}.safetensors"
    ops = args.ops.split(",") if args.ops else None
    started = {"utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "load": os.getloadavg()}
    result = {"model": model, "dtype": args.dtype, "started": started, "machine": machine(), "measurement": MEASURED}
    result["checkpoint"] = write_checkpoint(ckpt, args.blocks, args.dtype, workdir)
    runs = []
    for recipe in args.recipes.split(","):
        for alone in (False, True) if args.alone else (False,):
            if seconds_until(args.stop_at) <= 60:
                runs.append({"recipe": recipe, "status": "not run", "error": f"deadline {args.stop_at} UTC"})
                break
            chosen = [model["points"][0]] if alone else ops
            print(f"exporting {recipe} ({'the heaviest point alone' if alone else args.ops or 'all points'}) ...")
            run = export_one(ckpt, recipe, chosen, workdir, args.rss_cap_gib, args.stop_at)
            run["alone"] = alone
            run["peak_over_fp32_weights"] = round(run["peak_rss"] / weights, 3)
            runs.append(run)
            print(
                f"  {run['status']} in {run['wall_s']:.0f} s, peak {run['peak_rss'] / GIB:.2f} GiB "
                f"({run['peak_over_fp32_weights']:.2f}x) at '{run['peak_stage']}'" + f"; {run.get('error', '')}",
                flush=True,
            )
    for run in runs:
        one = next((r for r in runs if r["recipe"] == run["recipe"] and r.get("alone") and r.get("bytes")), None)
        if not run.get("alone") and one and run.get("bytes"):
            run["bytes_all_over_one"] = round(run["bytes"] / one["bytes"], 4)
    result.update(runs=runs, finished={"utc": datetime.datetime.now(datetime.UTC).isoformat(), "load": os.getloadavg()})
    result["goals"] = {"peak_over_fp32_weights": TARGET_RATIO, "peak_rss_bytes": TARGET_CAP}
    if not args.keep:
        ckpt.unlink(missing_ok=True)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(
        f"\n{model['preset']}: {model['parameters'] / 1e9:.3f} B parameters, {weights / GIB:.2f} GiB fp32; "
        f"{args.dtype} checkpoint; load average {started['load'][0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    rows = [
        [
            r["recipe"] + (" (heaviest alone)" if r.get("alone") else ""),
            r.get("wall_s", 0.0),
            r.get("peak_rss", 0) / GIB,
            r.get("peak_over_fp32_weights", 0.0),
            r.get("peak_stage") or "",
            r.get("bytes", 0) / 2**20,
            r.get("bytes_all_over_one", ""),
            r["status"] + (f": {r['error'][:60]}" if r.get("error") else ""),
        ]
        for r in runs
    ]
    print_table(["recipe", "wall s", "peak GiB", "x fp32 w", "peak stage", "bundle MiB", "all/one", "status"], rows)


if __name__ == "__main__":
    main()
