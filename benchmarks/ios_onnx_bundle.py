"""iOS and ONNX bundles: bytes with every operating point vs one, bytes per recipe, conversion time per function,
ONNX Runtime host latency per operating point.

Everything is built in this one process from the same sliced units, with the same code the exporter runs
(`targets.ios`, `targets.onnx`): each unit is converted once per precision, compressed once per scheme, then merged
(Core ML) or bundled (ONNX) twice — with every method, and with only the full operating point plus decode and
encode_text — so "all vs one" compares like with like.

    python benchmarks/ios_onnx_bundle.py [--checkpoint CKPT] [--threads 1] [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from elasticdit.quiet import silence_library_noise

silence_library_noise()

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from elasticdit.checkpoint import load_checkpoint  # noqa: E402
from elasticdit.demo_checkpoint import demo_checkpoint_path  # noqa: E402
from elasticdit.lowering import Formulation, LoweredUnit, export_program  # noqa: E402
from elasticdit.operating_points import select  # noqa: E402
from elasticdit.quiet import python_output_captured  # noqa: E402
from elasticdit.slicing import export_units  # noqa: E402
from elasticdit.targets import TARGETS, target_recipe  # noqa: E402
from elasticdit.targets.ios import convert as ios  # noqa: E402
from elasticdit.targets.ios.package import duplicate_blobs  # noqa: E402
from elasticdit.targets.onnx import graphs as onnx  # noqa: E402
from elasticdit.targets.onnx.runtime import session_options  # noqa: E402


def coreml_program(unit):
    return export_program(unit, TARGETS["ios"].formulation)


def onnx_graph(unit):
    return onnx.export_graph(LoweredUnit(unit, export_program(unit, Formulation()), False))


console = Console(width=150)
IOS_RECIPES = ("ios-fp16", "ios-fp32", "ios-int8", "ios-palettize6", "ios-palettize4")
ALL_VS_ONE = ("ios-fp16", "ios-int8", "ios-palettize4")
WEIGHT_BIN = "Data/com.apple.CoreML/weights/weight.bin"


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _variants(units) -> dict[str, list[str]]:
    """all methods; the full point alone; every depth of the full point's ratio (points sharing all weights)."""
    full = units[0]
    others = [u.method for u in units if u.kind != "denoise"]
    same_ratio = [u.method for u in units if u.kind == "denoise" and u.point.ratio == full.point.ratio]
    return {"all": [u.method for u in units], "one": [full.method, *others], "one_ratio": [*same_ratio, *others]}


def ratio_specific_bytes(models, full_ratio: int) -> int:
    """float32 bytes of the tensors only other ratios use: their patch embeddings and output projections."""
    from elasticdit.model.embeddings import ratio_suffix

    suffixes = {ratio_suffix(r) for r in models.cfg.elastic.compression_ratios if r != full_ratio}
    return sum(
        t.numel() * 4
        for name, t in models.transformer.state_dict().items()
        if any(name.split(".")[-2].endswith(s) for s in suffixes if s)
    )


def coreml(units, tmp: Path) -> tuple[dict, dict]:
    """Per recipe: package bytes (all methods, one point); per function: seconds per stage."""
    seconds: dict[str, dict[str, float]] = {u.method: {} for u in units}
    converted = {}
    ios.convert(units[-1], coreml_program(units[-1]), "fp16")  # warm-up: first-call costs are no one's
    for precision in ("fp16", "fp32"):
        for unit in units:
            ep, t_export = timed(coreml_program, unit)
            converted[precision, unit.method], t_convert = timed(ios.convert, unit, ep, precision)
            seconds[unit.method]["torch.export"] = round(t_export, 2)
            seconds[unit.method][f"ct.convert {precision}"] = round(t_convert, 2)
            console.log(f"converted {unit.method} ({precision}) in {t_convert:.1f} s")
    variants = _variants(units)
    sizes = {}
    for name in IOS_RECIPES:
        recipe = target_recipe(name, "ios")
        singles = {}
        for unit in units:
            model = converted[recipe.precision, unit.method]
            if unit.kind == "denoise" and recipe.quantized:
                model, t = timed(ios.compress, model, recipe, unit.method)
                seconds[unit.method][name.removeprefix("ios-")] = round(t, 2)
                console.log(f"{name}: compressed {unit.method} in {t:.1f} s")
            singles[unit.method] = tmp / name / f"{unit.method}.mlpackage"
            with python_output_captured():
                model.save(str(singles[unit.method]))
        row = {}
        for variant, methods in variants.items():
            pkg = tmp / name / f"{variant}.mlpackage"
            ios.merge({m: singles[m] for m in methods}, pkg, units[0].method)
            ios.canonicalize(pkg, {})
            row[variant] = {"weight_bin": (pkg / WEIGHT_BIN).stat().st_size, "package": tree_bytes(pkg)}
        row["duplicate_blobs"] = duplicate_blobs(tmp / name / "all.mlpackage")
        sizes[name] = row
    return sizes, seconds


def onnx_part(units, tmp: Path, threads: int, repeats: int) -> tuple[dict, dict, dict]:
    seconds, graphs = {}, {"onnx-fp32": {}, "onnx-int8": {}}
    onnx_graph(units[-1])  # warm-up
    for unit in units:
        graphs["onnx-fp32"][unit.method], t = timed(onnx_graph, unit)
        seconds[unit.method] = {"onnx export": round(t, 2)}
        quantized = unit.kind == "denoise"
        graphs["onnx-int8"][unit.method] = (
            onnx.quantize(
                copy.deepcopy(graphs["onnx-fp32"][unit.method]), target_recipe("onnx-int8", "onnx"), unit.method
            )
            if quantized
            else graphs["onnx-fp32"][unit.method]
        )
        console.log(f"exported {unit.method} to ONNX in {t:.1f} s")
    sizes = {}
    for name, per_method in graphs.items():
        row = {}
        for variant, methods in _variants(units).items():
            folder = tmp / name / variant
            folder.mkdir(parents=True)
            onnx.bundle_graphs({m: per_method[m] for m in methods}, folder)
            row[variant] = {"weights_bin": (folder / onnx.WEIGHTS).stat().st_size, "bundle": tree_bytes(folder)}
        sizes[name] = row
    latency = {}
    import onnxruntime as ort

    for name in graphs:
        folder = tmp / name / "all"
        sessions = {
            u.method: ort.InferenceSession(
                str(folder / f"{u.method}.onnx"),
                sess_options=session_options(threads),
                providers=["CPUExecutionProvider"],
            )
            for u in units
        }
        feeds = {u.method: {s.name: t.numpy() for s, t in zip(u.inputs, u.example_inputs, strict=True)} for u in units}
        latency[name] = {m: [] for m in sessions}
        for m, sess in sessions.items():
            for _ in range(3):
                sess.run(None, feeds[m])
        # interleave the methods round by round so load on the shared machine hits them alike
        for _ in range(repeats):
            for m, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, feeds[m])
                latency[name][m].append((time.perf_counter() - t0) * 1e3)
    summary = {
        name: {
            m: {
                "median_ms": round(statistics.median(ts), 3),
                "p10_ms": round(sorted(ts)[len(ts) // 10], 3),
                "p90_ms": round(sorted(ts)[(9 * len(ts)) // 10], 3),
            }
            for m, ts in per.items()
        }
        for name, per in latency.items()
    }
    return sizes, seconds, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the demo checkpoint")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per method")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--tables", type=Path, default=None, help="only print the tables of a JSON written before")
    args = parser.parse_args()
    if args.tables:
        print_tables(json.loads(args.tables.read_text()))
        return
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint or demo_checkpoint_path())
    models = ckpt.models()
    points = select(ckpt.cfg, [])
    units = export_units(models, points, [ckpt.cfg.resolution], "masked")
    console.log(f"{ckpt.path.name}: {len(points)} operating points, {len(units)} methods")
    with tempfile.TemporaryDirectory(prefix="elasticdit-bench-") as tmp:
        ios_sizes, ios_seconds = coreml(units, Path(tmp) / "ios")
        onnx_sizes, onnx_seconds, latency = onnx_part(units, Path(tmp) / "onnx", args.threads, args.repeats)
    report = {
        "checkpoint": str(ckpt.path.name),
        "checkpoint_sha256": ckpt.sha256,
        "operating_points": [p.name for p in points],
        "machine": {"cpus": os.cpu_count(), "ort_threads": args.threads, "repeats": args.repeats},
        "transformer_fp32_bytes": sum(t.numel() * 4 for t in models.transformer.state_dict().values()),
        "ratio_specific_fp32_bytes": ratio_specific_bytes(models, points[0].ratio),
        "coreml_bytes": ios_sizes,
        "onnx_bytes": onnx_sizes,
        "seconds_per_function": {m: {**ios_seconds[m], **onnx_seconds[m]} for m in ios_seconds},
        "onnx_latency_ms": latency,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.log(f"wrote {args.json}")
    print_tables(report)


def _x(a: int, b: int, target: float | None = None) -> str:
    ratio = a / b
    return f"{ratio:.3f}x" + ("" if target is None else (" ok" if ratio <= target else " MISSED"))


def print_tables(r: dict) -> None:
    full = r["operating_points"][0]
    share = r["ratio_specific_fp32_bytes"] / r["transformer_fp32_bytes"]
    console.print(
        f"all = {len(r['operating_points'])} points + decode + encode_text; one = {full} + decode + encode_text; "
        f"one ratio = every depth of {full}'s ratio + decode + encode_text. Weights only other ratios use (their "
        f"patch embeddings and output projections) are {share:.1%} of this transformer (float32 bytes)."
    )
    t = Table(title="Core ML model.mlpackage bytes")
    cols = (
        "recipe",
        "weight.bin all",
        "all/one",
        "one ratio/one",
        "dup blobs",
        "package all",
        "all/one",
        "all vs fp16",
    )
    for col in cols:
        t.add_column(col, justify="right")
    base = r["coreml_bytes"]["ios-fp16"]["all"]["package"]
    for name, row in r["coreml_bytes"].items():
        a, o, s1 = row["all"], row["one"], row["one_ratio"]
        target = 1.05 if name in ALL_VS_ONE else None
        t.add_row(
            name,
            f"{a['weight_bin']:,}",
            _x(a["weight_bin"], o["weight_bin"], target),
            _x(s1["weight_bin"], o["weight_bin"]),
            str(row["duplicate_blobs"]),
            f"{a['package']:,}",
            _x(a["package"], o["package"]),
            _x(a["package"], base),
        )
    console.print(t)
    t = Table(title="ONNX bundle bytes")
    for col in ("recipe", "weights.bin all", "all/one", "one ratio/one", "bundle all", "all/one", "one ratio/one"):
        t.add_column(col, justify="right")
    for name, row in r["onnx_bytes"].items():
        a, o, s1 = row["all"], row["one"], row["one_ratio"]
        t.add_row(
            name,
            f"{a['weights_bin']:,}",
            _x(a["weights_bin"], o["weights_bin"], 1.10),
            _x(s1["weights_bin"], o["weights_bin"]),
            f"{a['bundle']:,}",
            _x(a["bundle"], o["bundle"], 1.10),
            _x(s1["bundle"], o["bundle"]),
        )
    console.print(t)
    lat = r["onnx_latency_ms"]
    base = lat["onnx-fp32"][f"denoise_{full}"]["median_ms"]
    t = Table(
        title=f"ONNX Runtime host latency, {r['machine']['ort_threads']} thread(s), median of "
        f"{r['machine']['repeats']} (p10-p90), ratio to denoise_{full} fp32"
    )
    for col in ("method", "fp32 ms", "ratio", "int8 ms", "ratio", "int8/fp32"):
        t.add_column(col, justify="right")
    for m, f32 in lat["onnx-fp32"].items():
        i8 = lat["onnx-int8"][m]
        t.add_row(
            m,
            f"{f32['median_ms']:.2f} ({f32['p10_ms']:.2f}-{f32['p90_ms']:.2f})",
            f"{f32['median_ms'] / base:.2f}x",
            f"{i8['median_ms']:.2f} ({i8['p10_ms']:.2f}-{i8['p90_ms']:.2f})",
            f"{i8['median_ms'] / base:.2f}x",
            f"{i8['median_ms'] / f32['median_ms']:.2f}x",
        )
    console.print(t)
    secs = r["seconds_per_function"]
    cols = list(dict.fromkeys(c for row in secs.values() for c in row))
    t = Table(title="conversion wall time per function (s)")
    t.add_column("method")
    for col in cols:
        t.add_column(col, justify="right")
    for m, row in secs.items():
        t.add_row(m, *[f"{row[c]:.1f}" if c in row else "-" for c in cols])
    console.print(t)


if __name__ == "__main__":
    main()
