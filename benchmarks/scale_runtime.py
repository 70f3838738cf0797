"""Running the paper-scale model on this host: step time per point, decode at 1024 px, peak memory (issue 25 item 4).

The model and checkpoint are `export_scale.py`'s (tests/configs.py `paper_scale_config()`: 2.064 B parameters,
7.69 GiB float32, seeded random weights written by `save_checkpoint` in a child; an existing checkpoint under
`--workdir` is reused). Each `RECIPE:POINT[,POINT...]` of `--bundles` is exported by `export_bundle` (what `elasticdit
export` runs) through `export_scale.export_one`: a child with per-stage peak RSS, a memory cap and `--stop-at`; the
bundle is kept under `--workdir` and reused by a later run (with the export's figures, saved beside it).

Timing: every (bundle, point) is profiled by `elasticdit.profile.core.profile_bundle` (what `elasticdit profile
--device host` runs: the target's profile backend, ExecuTorch or ONNX Runtime) in a fresh child process per round,
`--warmup` untimed then `--runs` timed denoise steps, plus the decoder (1024 px, the bundle's only resolution) and
the text encoder the same way; `--rounds` rounds, the variants in alternating order. Medians and p10-p90 are over
every timed run of every round. Peak memory: the profile's own peak-memory child (profile/memory.py: a fresh process
loading and running the text encoder if any + the point + the decoder once; VmHWM over its baseline after imports),
in the first round, and the same child with the denoise method alone, against the point's planned memory from the
manifest (resident `weight_bytes` + `arena_bytes` of the point, and of the text encoder and decoder: the profile's
`companions_bytes`; what `elasticdit plan` uses when nothing was measured; the point's own for the denoise method
alone); goal <= 1.1x. Elastic range: the full point's step time over the
lightest point's, per recipe.

`--verify POINT,...`: `elasticdit verify`'s `verify_bundle` in a child, on each bundle holding one of those points
(every method of the bundle against the checkpoint: pass/fail, values, wall time, peak RSS). `--pages`: per point, a
child that loads and runs it once and reports its VmRSS / RssAnon / RssFile / VmHWM after imports, loading and the run.

    nice -n 10 python benchmarks/scale_runtime.py --workdir /tmp/scale4-work \\
        --bundles android-8da4w:r1_d24 android-8da4w:r4_d12 onnx-fp32:r4_d12 --verify r4_d12 --json scale_runtime.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import GIB, mem_available, print_table, run_child, run_worker, seconds_until
from export_scale import describe_model, export_one, machine, status, write_checkpoint

MIB = 2**20
GOAL_RATIO = 1.1  # peak RSS running a point <= 1.1 x (resident weights + planned arena)


# ---------------------------------------------------------------- child side


def profile_worker(bundle: str, point: str, runs: int, warmup: int, threads: int, memory: bool) -> dict:
    from elasticdit.profile.core import ProfileRequest, profile_bundle

    req = ProfileRequest(
        bundle=Path(bundle),
        ops=[point],
        runs=runs,
        warmup=warmup,
        threads=threads,
        memory=memory,
        op_breakdown=False,
        progress=False,
    )
    report = profile_bundle(req)
    row = report["operating_points"][0]
    alone = None
    if memory:  # the same peak-memory child with the denoise method alone (the decoder's activations left out)
        from elasticdit.profile.memory import measure_peak_memory

        alone = measure_peak_memory(Path(bundle), [row["method"]], threads)
    return {
        "backend": report["device"].get("backend"),
        "point": row["name"],
        "method": row["method"],
        "gflops": row["gflops"],
        "weight_bytes": row["weight_bytes"],
        "arena_bytes": row["arena_bytes"],
        "companions_bytes": row.get("companions_bytes"),
        "load_ms": row["load_ms"],
        "denoise_ms": row["denoise_ms"]["all"],
        "denoise_cpu_ms": (row["denoise_cpu_ms"] or {}).get("all"),
        "decode_ms": report["decoder"]["ms"]["all"] if report["decoder"] else None,
        "text_encoder_ms": report["text_encoder"]["ms"]["all"] if report["text_encoder"] else None,
        "memory": row["memory"],
        "memory_denoise_alone": alone,
        "profile_process_peak_rss": status()["VmHWM"],
    }


def verify_worker(bundle: str, checkpoint: str, threads: int) -> dict:
    import time

    from elasticdit.verify import verify_bundle

    t0 = time.perf_counter()
    result = verify_bundle(bundle, Path(checkpoint), threads)
    keep = ("method", "reference", "metric", "value", "limit", "snr_db", "min_snr_db", "passed")
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "passed": result["passed"],
        "methods": [{k: m[k] for k in keep} for m in result["methods"]],
        "recipe_differences": result["recipe_differences"],
        "peak_rss": status()["VmHWM"],
    }


def pages_worker(bundle: str, point: str, threads: int) -> dict:
    """Where a point's resident memory is: anonymous vs file pages after imports, after loading, after one run."""
    from elasticdit.bundle.reader import read_bundle
    from elasticdit.specs import example_inputs

    opened = read_bundle(Path(bundle), check=False)
    backend = opened.target.profile_backend(Path(bundle), opened.manifest, threads)
    entry = next(p for p in opened.manifest.points_at(None) if p.name == point)
    inputs = [t.contiguous() for t in example_inputs(entry.inputs)]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    out = {"imports": status()}
    handle, _ = backend.load(entry)
    out["loaded"] = status()
    backend.execute(handle, entry, inputs)
    out["ran"] = status()
    return out


# ---------------------------------------------------------------- parent side


def percentiles(xs: list[float]) -> dict:
    from elasticdit.profile.stats import percentile

    s = sorted(xs)
    return {
        "median": round(statistics.median(s), 1),
        "p10": round(percentile(s, 10), 1),
        "p90": round(percentile(s, 90), 1),
        "n": len(s),
    }


def label_of(spec: str) -> str:
    recipe, ops = spec.split(":")
    return f"{recipe}-{ops.replace(',', '+')}"


def export_bundles(specs: list[str], ckpt: Path, workdir: Path, cap_gib: float, stop_at: str | None) -> list[dict]:
    out = []
    for spec in specs:
        recipe, ops = spec.split(":")
        bundle, saved = workdir / f"bundle-{label_of(spec)}", workdir / f"export-{label_of(spec)}.json"
        saved_run = json.loads(saved.read_text()) if saved.is_file() else None
        if saved_run and (saved_run["status"] != "ok" or (bundle / "manifest.json").is_file()):
            run = saved_run  # a failed export is a result too: not retried
            print(f"reusing {bundle}: {run['status']} in {run['wall_s']:.0f} s, peak {run['peak_rss'] / GIB:.2f} GiB")
        elif seconds_until(stop_at) <= 60:
            run = {"recipe": recipe, "ops": ops.split(","), "status": "not run", "error": f"deadline {stop_at} UTC"}
        else:
            print(f"exporting {recipe} {ops} ...", flush=True)
            run = export_one(ckpt, recipe, ops.split(","), workdir, cap_gib, stop_at, keep=bundle)
            run["bundle"] = str(bundle)
            saved.write_text(json.dumps(run))
            print(f"  {run['status']} in {run['wall_s']:.0f} s, peak {run['peak_rss'] / GIB:.2f} GiB", flush=True)
        out.append(run)
    return out


def profile_rounds(exports: list[dict], args: argparse.Namespace) -> list[dict]:
    variants = [(r["recipe"], r["bundle"], p) for r in exports if r["status"] == "ok" for p in r["ops"]]
    rows: dict[tuple, dict] = {v: {"recipe": v[0], "bundle": v[1], "point": v[2], "children": []} for v in variants}
    for rnd in range(args.rounds):
        for v in variants if rnd % 2 == 0 else variants[::-1]:
            if seconds_until(args.stop_at) <= 60:
                rows[v]["children"].append({"round": rnd, "status": "not run", "error": "deadline"})
                continue
            load = os.getloadavg()
            cap = int(min(args.rss_cap_gib * GIB, mem_available() - 1.5 * GIB))
            child = [
                "profile",
                v[1],
                v[2],
                args.runs,
                args.warmup,
                args.threads,
                rnd == 0,
            ]
            result = run_child(__file__, child, args.workdir, cap, args.stop_at)
            result.update(round=rnd, load_start=list(load), load_end=list(os.getloadavg()))
            rows[v]["children"].append(result)
            ms = result.get("denoise_ms") or []
            print(f"  round {rnd} {v[0]} {v[2]}: {result['status']} {[round(x) for x in ms]} ms, load {load[0]:.2f}")
    for row in rows.values():
        done = [c for c in row["children"] if c["status"] == "ok"]
        if not done:
            continue
        first = done[0]
        row["denoise_ms"] = percentiles([x for c in done for x in c["denoise_ms"]])
        if first.get("denoise_cpu_ms"):
            row["denoise_cpu_ms"] = percentiles([x for c in done for x in c["denoise_cpu_ms"]])
        if first.get("decode_ms"):
            row["decode_ms"] = percentiles([x for c in done for x in c["decode_ms"]])
        if first.get("text_encoder_ms"):
            row["text_encoder_ms"] = percentiles([x for c in done for x in c["text_encoder_ms"]])
        manifest_keys = ("backend", "method", "gflops", "weight_bytes", "arena_bytes", "companions_bytes")
        row.update({k: first.get(k) for k in manifest_keys})
        row["load_average"] = [min(c["load_start"][0] for c in done), max(c["load_end"][0] for c in done)]
        memory = next((c["memory"] for c in done if c.get("memory")), None)
        point = (row["weight_bytes"] or 0) + (row["arena_bytes"] or 0)
        planned = point + (row["companions_bytes"] or 0)  # the peak child loads the text encoder and decoder too
        row["planned_bytes"] = planned
        if memory:
            peak = memory["peak_mb"] * MIB
            row["memory"] = memory
            row["peak_over_planned"] = round(peak / planned, 3) if planned else None
            row["process_peak_over_planned"] = round(memory["process_peak_mb"] * MIB / planned, 3) if planned else None
            row["goal_met"] = bool(planned) and peak <= GOAL_RATIO * planned
        alone = next((c["memory_denoise_alone"] for c in done if c.get("memory_denoise_alone")), None)
        if alone and point:
            row["memory_denoise_alone"] = alone
            row["alone_peak_over_planned"] = round(alone["peak_mb"] * MIB / point, 3)
    return list(rows.values())


def page_breakdown(exports: list[dict], args: argparse.Namespace) -> list[dict]:
    out = []
    for run in (r for r in exports if r["status"] == "ok"):
        for point in run["ops"]:
            cap = int(min(args.rss_cap_gib * GIB, mem_available() - 1.5 * GIB))
            child = ["pages", run["bundle"], point, args.threads]
            result = run_child(__file__, child, args.workdir, cap, args.stop_at)
            out.append({"recipe": run["recipe"], "point": point, **result})
            ran = result.get("ran") or {}
            print(f"  pages {point}: " + ", ".join(f"{k} {v / MIB:.0f} MiB" for k, v in ran.items()), flush=True)
    return out


def verify_bundles(exports: list[dict], points: list[str], ckpt: Path, args: argparse.Namespace) -> list[dict]:
    out = []
    for run in exports:
        if run["status"] != "ok" or not set(points) & set(run["ops"]):
            continue
        load = os.getloadavg()
        cap = int(min(args.rss_cap_gib * GIB, mem_available() - 1.5 * GIB))
        print(f"verifying {run['bundle']} ...", flush=True)
        result = run_child(
            __file__, ["verify", run["bundle"], str(ckpt), args.threads], args.workdir, cap, args.stop_at
        )
        result.update(recipe=run["recipe"], ops=run["ops"], load_start=list(load), load_end=list(os.getloadavg()))
        print(f"  {result['status']}: passed {result.get('passed')} in {result['wall_s']:.0f} s", flush=True)
        out.append(result)
    return out


def elastic_range(rows: list[dict], full: str, light: str) -> list[dict]:
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        by = {r["point"]: r for r in rows if r["recipe"] == recipe and r.get("denoise_ms")}
        if full in by and light in by:
            ratio = by[full]["denoise_ms"]["median"] / by[light]["denoise_ms"]["median"]
            gf = (by[full]["gflops"] or 0) / (by[light]["gflops"] or 1)
            out.append(
                {
                    "recipe": recipe,
                    "full": full,
                    "lightest": light,
                    "step_ratio": round(ratio, 2),
                    "gflops_ratio": round(gf, 2),
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=["android-8da4w:r1_d24", "android-8da4w:r4_d12"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale-runtime"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2, help="timed denoise steps per child")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--verify", default="", help="comma-separated points: verify the bundles holding them")
    parser.add_argument("--full", default="r1_d24")
    parser.add_argument("--lightest", default="r4_d12")
    parser.add_argument("--rss-cap-gib", type=float, default=15.0, help="kill a child above this")
    parser.add_argument("--stop-at", help="UTC HH:MM: kill a running child then and skip the rest")
    parser.add_argument("--no-profile", action="store_true", help="exports (and --verify) only")
    parser.add_argument("--pages", action="store_true", help="anonymous vs file pages of each point, once")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, {"profile": profile_worker, "verify": verify_worker, "pages": pages_worker})
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    started = {"utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "load": os.getloadavg()}
    result: dict = {"model": describe_model(24), "started": started, "machine": machine(), "settings": vars(args)}
    ckpt = args.workdir / "paper_b24_fp32.safetensors"
    result["checkpoint"] = write_checkpoint(ckpt, 24, "fp32", args.workdir)
    result["exports"] = exports = export_bundles(args.bundles, ckpt, args.workdir, args.rss_cap_gib, args.stop_at)
    rows = [] if args.no_profile else profile_rounds(exports, args)
    result["profiles"] = rows
    result["elastic_range"] = elastic_range(rows, args.full, args.lightest)
    if args.pages:
        result["pages"] = page_breakdown(exports, args)
    if args.verify:
        result["verify"] = verify_bundles(exports, args.verify.split(","), ckpt, args)
    result["finished"] = {"utc": datetime.datetime.now(datetime.UTC).isoformat(), "load": os.getloadavg()}
    result["goal"] = {"peak_over_planned": GOAL_RATIO}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    print_table(
        ["bundle", "wall s", "peak GiB", "MiB", "status"],
        [
            [
                label_of(f"{r['recipe']}:{','.join(r['ops'])}"),
                r.get("wall_s", 0.0),
                r.get("peak_rss", 0) / GIB,
                r.get("bytes", 0) / MIB,
                r["status"] + (f": {r['error'][:70]}" if r.get("error") else ""),
            ]
            for r in exports
        ],
    )
    if not rows:
        return
    print_table(
        ["recipe", "point", "step ms", "p10-p90", "decode ms", "peak MiB", "planned MiB", "x planned", "alone x"],
        [
            [
                r["recipe"],
                r["point"],
                r.get("denoise_ms", {}).get("median", ""),
                f"{r['denoise_ms']['p10']}-{r['denoise_ms']['p90']}" if r.get("denoise_ms") else "",
                r.get("decode_ms", {}).get("median", ""),
                (r.get("memory") or {}).get("peak_mb", ""),
                round(r.get("planned_bytes", 0) / MIB, 1),
                r.get("peak_over_planned", ""),
                r.get("alone_peak_over_planned", ""),
            ]
            for r in rows
        ],
    )
    for e in result["elastic_range"]:
        print(
            f"elastic range {e['recipe']}: {e['full']} / {e['lightest']} = {e['step_ratio']}x "
            f"(GFLOPs {e['gflops_ratio']}x)"
        )


if __name__ == "__main__":
    main()
