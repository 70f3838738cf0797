"""Helpers shared by the benchmarks: timing, thread settings, tables, the mobile-scale model."""

from __future__ import annotations

import datetime
import json
import math
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from elasticdit.config import ElasticConfig, ModelConfig, SchedulerConfig, SSBAConfig, TransformerConfig, VAEConfig


def set_all_threads(threads: int) -> None:
    """The same thread count for torch and XNNPACK (set before any .pte is loaded)."""
    from elasticdit.targets.android.runtime import set_threads

    torch.set_num_threads(threads)
    set_threads(threads)


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time in milliseconds of `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def timings_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def print_table(columns: list[str], rows: list[list[object]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))))


def mobile_config() -> ModelConfig:
    """The benchmarks' mobile-scale model: width 512 (8 heads of 64), 12 blocks, 512 px (1024 tokens at ratio 1,
    SSBA tile 8: a 4x4 tile grid), ratios 1/2/4, four depth plans; random weights, no VAE encoder."""
    return ModelConfig(
        transformer=TransformerConfig(
            hidden_size=512,
            num_heads=8,
            num_blocks=12,
            mlp_ratio=4.0,
            patch_size=2,
            in_channels=16,
            text_dim=512,
            text_len=77,
            pooled_dim=512,
            qk_norm=True,
        ),
        elastic=ElasticConfig(
            compression_ratios=(1, 2, 4),
            depths={
                "12": tuple(range(12)),
                "9": (0, 1, 2, 3, 4, 5, 8, 9, 11),
                "6": (0, 1, 2, 3, 10, 11),
                "4": (0, 1, 10, 11),
            },
        ),
        ssba=SSBAConfig(enabled=True, tile=8, window=1),
        scheduler=SchedulerConfig(shift=3.0, steps=20, guidance_scale=4.5),
        resolution=(512, 512),
        vae=VAEConfig(decoder_widths=(64, 32, 16), latent_blocks=2),
    )


# ---------------------------------------------------------------- child processes with a memory cap

GIB = 2**30


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))


def child_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return 0


def seconds_until(hhmm: str | None) -> float:
    if not hhmm:
        return math.inf
    now = datetime.datetime.now(datetime.UTC)
    h, m = (int(x) for x in hhmm.split(":"))
    return (now.replace(hour=h, minute=m, second=0, microsecond=0) - now).total_seconds()


def run_worker(spec: str, workers: dict[str, Callable[..., dict]]) -> None:
    """A benchmark's `--worker JSON` mode: the libraries silenced, `[kind, *args]` decoded, the worker of that kind
    run and its result printed as the last JSON line (what `run_child` reads)."""
    from elasticdit.quiet import silence_library_noise

    silence_library_noise()
    kind, *rest = json.loads(spec)
    print(json.dumps(workers[kind](*rest)))


def run_child(script: str, args: list, workdir: Path, cap: int, stop_at: str | None) -> dict:
    """Run `script --worker JSON(args)` (the worker prints its result as its last JSON line); returns that result
    with `status`, wall seconds, the parent's 0.5 s samples of the child's VmRSS (peak) and what stopped it: the
    child is killed above `cap` bytes or at `stop_at` (UTC HH:MM)."""
    tag = f"{args[0]}-{time.monotonic_ns()}"
    out, err = workdir / f"{tag}.out", workdir / f"{tag}.err"
    cmd = [sys.executable, script, "--worker", json.dumps(args)]
    t0, sampled, stopped = time.perf_counter(), 0, None
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe)
        while proc.poll() is None:
            rss = child_rss(proc.pid)
            sampled = max(sampled, rss)
            if rss > cap:
                stopped = f"killed by the benchmark: VmRSS {rss / GIB:.2f} GiB above the cap {cap / GIB:.2f} GiB"
            elif seconds_until(stop_at) <= 0:
                stopped = f"stopped at the deadline {stop_at} UTC"
            if stopped:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.5)
    result: dict = {"wall_s": round(time.perf_counter() - t0, 1), "sampled_peak_rss": sampled, "exit": proc.returncode}
    lines = [line for line in out.read_text().splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        result.update(json.loads(lines[-1]), status="ok")
    elif stopped:
        result.update(status="killed", error=stopped)
    else:
        tail = [line for line in err.read_text().splitlines() if line.strip()]
        named = [line for line in tail if "Error" in line.split(":")[0]]
        why = "killed by SIGKILL (out of memory?)" if proc.returncode == -9 else (named or tail or ["no output"])[-1]
        result.update(status="failed", error=why[:300])
    out.unlink()
    err.unlink()
    return result
