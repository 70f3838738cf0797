"""Profiler overhead: the same method timed with ETDump on and off, side by side in one process.

    python benchmarks/profiler_overhead.py [--bundle DIR] [--methods a,b] [--runs 30] [--warmup 5]
                                           [--threads N] [--json out.json]

Two programs are loaded from the same .pte: one plain, one with the event tracer on (ETDump records every
XNNPACK operator, every delegate call and the method, each run). Runs alternate between them, the order
swapped every iteration, so machine load hits both alike; the inputs are the same tensors. Reported per
method: median and p10-p90 of each variant, the ratio on/off, the number of ETDump events per run, and the
method time the ETDump itself records. Without --bundle, the demo checkpoint's heaviest and lightest operating
points and its decoder are exported to a temporary folder first (about 2 minutes here).

Target: profiling on costs <= 1.10x the plain run of the heaviest operating point (so a profile's per-op
figures describe the timed runs); `elasticdit profile` keeps ETDump out of its timed runs either way.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table

from elasticdit.quiet import silence_library_noise

TARGET_RATIO = 1.10


def percentile(xs: list[float], q: float) -> float:
    from elasticdit.profile.stats import percentile as pct

    return pct(sorted(xs), q)


def export_demo(out: Path) -> Path:
    from elasticdit.checkpoint import load_checkpoint
    from elasticdit.demo_checkpoint import demo_checkpoint_path
    from elasticdit.exporter import ExportRequest, export_bundle
    from elasticdit.operating_points import full_point, lightest_point

    cfg = load_checkpoint(demo_checkpoint_path()).cfg
    ops = [full_point(cfg).name, lightest_point(cfg).name]
    export_bundle(ExportRequest(demo_checkpoint_path(), "android", out, ops=ops, force=True, progress=False))
    return out


def measure(bundle: Path, method: str, runs: int, warmup: int) -> dict:
    from elasticdit.bundle.reader import read_bundle
    from elasticdit.profile.host import inputs_for
    from elasticdit.targets.android.etdump import ops_from_etdump
    from elasticdit.targets.android.profile import ExecuTorchHost

    entry = read_bundle(bundle).manifest.method(method)
    host = ExecuTorchHost(bundle, None)
    (_plain_prog, plain), _ = host.load(entry)
    (traced_prog, traced), _ = host.load(entry, etdump=True)
    inputs = inputs_for(entry)
    for _ in range(warmup):
        plain.execute(inputs)
        traced.execute(inputs)
    off, on = [], []
    for i in range(runs):
        pair = ((plain, off), (traced, on)) if i % 2 == 0 else ((traced, on), (plain, off))
        for m, sink in pair:
            t0 = time.perf_counter()
            m.execute(inputs)
            sink.append((time.perf_counter() - t0) * 1e3)
    with tempfile.TemporaryDirectory() as tmp:
        ops = ops_from_etdump(traced_prog.write_etdump(Path(tmp) / "x.etdp"))
    med_off, med_on = percentile(off, 50), percentile(on, 50)
    return {
        "method": method,
        "runs": runs,
        "off_ms": {"median": med_off, "p10": percentile(off, 10), "p90": percentile(off, 90)},
        "on_ms": {"median": med_on, "p10": percentile(on, 10), "p90": percentile(on, 90)},
        "ratio": med_on / med_off,
        "events_per_run": len(ops["events"]),
        "etdump_method_ms": ops["method_ms"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="An Android bundle (default: the demo's heaviest and lightest).")
    parser.add_argument("--methods", help="Comma-separated methods (default: every denoise method + decode).")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="Write the figures here.")
    args = parser.parse_args()
    silence_library_noise()
    from elasticdit.bundle.reader import read_bundle
    from elasticdit.targets.android.runtime import set_threads

    set_threads(args.threads)  # before anything is loaded
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or export_demo(Path(tmp) / "demo-bundle")
        manifest = read_bundle(bundle).manifest
        methods = (
            args.methods.split(",")
            if args.methods
            else [p.method for p in manifest.operating_points] + ([manifest.decoder.method] if manifest.decoder else [])
        )
        rows = [measure(bundle, m, args.runs, args.warmup) for m in methods]
    heaviest = max(
        (r for r in rows if r["method"].startswith("denoise")), key=lambda r: r["off_ms"]["median"], default=rows[0]
    )
    met = heaviest["ratio"] <= TARGET_RATIO
    print(
        f"ETDump on vs off, {args.runs} alternating runs each after {args.warmup} warm-up, "
        f"threads {args.threads or 'default'}"
    )
    print_table(
        ["method", "off ms (p10-p90)", "on ms (p10-p90)", "on / off", "events/run", "ETDump says ms"],
        [
            [
                r["method"],
                f"{r['off_ms']['median']:.3f} ({r['off_ms']['p10']:.3f}-{r['off_ms']['p90']:.3f})",
                f"{r['on_ms']['median']:.3f} ({r['on_ms']['p10']:.3f}-{r['on_ms']['p90']:.3f})",
                f"{r['ratio']:.3f}x",
                r["events_per_run"],
                r["etdump_method_ms"],
            ]
            for r in rows
        ],
    )
    print(
        f"target: ETDump on <= {TARGET_RATIO:.2f}x off on the heaviest point ({heaviest['method']}): "
        f"{heaviest['ratio']:.3f}x, {'met' if met else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
                    "threads": args.threads,
                    "warmup": args.warmup,
                    "rows": rows,
                    "target": {
                        "ratio_max": TARGET_RATIO,
                        "method": heaviest["method"],
                        "ratio": heaviest["ratio"],
                        "met": met,
                    },
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
