"""Android bundle: size, host latency, delegation and elastic range, all variants side by side in one process.

    python benchmarks/android_bundle.py [--model demo|mobile|both] [--runs 10] [--json out.json]

For each model (the embedded demo, and a mobile-scale random checkpoint: width 512, 12 blocks, 512 px, ratios
1/2/4, four depth plans) it exports, in this process:
  * the fp32 bundle with every operating point, with the full one only, and each point as its own program;
  * the int8 (PT2E) and 8da4w (torchao) bundles;
then times every method on this host through ExecuTorch (XNNPACK), against eager PyTorch and ONNX Runtime on the
same operating points, measures the share of denoise time inside the XNNPACK delegate (ETDump) and the
achieved GFLOP/s against a GEMM ceiling measured through XNNPACK in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import median_ms, mobile_config, print_table, set_all_threads

from elasticdit.checkpoint import load_checkpoint, save_checkpoint
from elasticdit.demo_checkpoint import demo_checkpoint_path
from elasticdit.exporter import ExportRequest, export_bundle
from elasticdit.model.pipeline import random_weights
from elasticdit.operating_points import full_point, lightest_point, operating_points
from elasticdit.quiet import silence_library_noise
from elasticdit.slicing import denoise_unit
from elasticdit.targets import target_recipe
from elasticdit.targets.android.runtime import ExecuTorchProgram

TARGETS = {
    "bytes_one_over_all": "all op points <= 1.05x one op point",
    "fp32_pte_over_ort": "fp32 .pte <= ONNX Runtime",
    "delegate_share": ">= 90% of denoise time in XNNPACK",
    "gemm_fraction": ">= 60% of the XNNPACK GEMM ceiling",
    "elastic_range": "lightest >= 8x faster than full",
    "int8_bytes": "int8 <= 0.3x fp32",
    "8da4w_bytes": "8da4w <= 0.2x fp32",
}


def export(ckpt: Path, out: Path, recipe: str, ops: list[str] | None) -> tuple[dict, float]:
    start = time.perf_counter()
    summary = export_bundle(ExportRequest(ckpt, "android", out, recipe=recipe, ops=ops, force=True, progress=False))
    return summary, time.perf_counter() - start


def gemm_ceiling(runs: int) -> float:
    """GFLOP/s of one [1024 x 512] @ [512 x 2048] Linear lowered to XNNPACK, measured here and now."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    lin = torch.nn.Linear(512, 2048).eval()
    x = torch.randn(1024, 512)
    ep = torch.export.export(lin, (x,))
    edge = to_edge_transform_and_lower(
        ep, partitioner=[XnnpackPartitioner()], compile_config=EdgeCompileConfig(_check_ir_validity=False)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.pte"
        path.write_bytes(edge.to_executorch().buffer)
        prog = ExecuTorchProgram(path)
        ms = median_ms(lambda: prog.run("forward", [x]), runs * 3)
    return 2 * 1024 * 512 * 2048 / ms / 1e6


def delegate_share(bundle: Path, method: str, inputs: list[torch.Tensor], runs: int) -> float:
    """Time inside XNNPACK delegate calls / method execution time, from ETDump."""
    from executorch.devtools import Inspector

    prog = ExecuTorchProgram(bundle / "model.pte", etdump=True)
    for _ in range(runs):
        prog.run(method, inputs)
    with tempfile.TemporaryDirectory() as tmp:
        etdump = prog.write_etdump(Path(tmp) / "run.etdp")
        frame = Inspector(etdump_path=str(etdump)).to_dataframe()
    frame = frame[frame.event_block_name == "Execute"]
    delegate = frame[frame.event_name == "DELEGATE_CALL"]["p50 (ms)"].sum()
    total = frame[frame.event_name == "Method::execute"]["p50 (ms)"].sum()
    return float(delegate / total) if total else float("nan")


def ort_session(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], folder: Path):
    import onnxruntime as ort

    path = folder / "point.onnx"
    torch.onnx.export(
        module,
        inputs,
        str(path),
        dynamo=True,
        opset_version=18,
        input_names=["latent", "timestep", "text", "pooled"],
        output_names=["velocity"],
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {name: t.numpy() for name, t in zip(["latent", "timestep", "text", "pooled"], inputs, strict=True)}
    return lambda: session.run(None, feed)


def point_latency(models, point, res, attention, programs, peers: bool, runs: int, tmp: Path) -> dict[str, float]:
    """fp32 .pte always; int8, 8da4w, eager PyTorch and ONNX Runtime when `peers`."""
    unit = denoise_unit(models, point, res, attention)
    inputs = list(unit.example_inputs)
    row = {"fp32_pte": median_ms(lambda: programs["fp32"].run(unit.method, inputs), runs)}
    if peers:
        row["int8_pte"] = median_ms(lambda: programs["int8"].run(unit.method, inputs), runs)
        row["8da4w_pte"] = median_ms(lambda: programs["8da4w"].run(unit.method, inputs), runs)
        with torch.no_grad():
            row["eager"] = median_ms(lambda: unit.module(*inputs), runs)
            row["ort"] = median_ms(ort_session(unit.module, tuple(inputs), tmp), runs)
    return row


def measure(label: str, ckpt: Path, runs: int, work: Path, ceiling: float, separate_programs: bool = True) -> dict:
    ck = load_checkpoint(ckpt)
    points = operating_points(ck.cfg)
    full, light = full_point(ck.cfg), lightest_point(ck.cfg)
    names = [p.name for p in points]
    result: dict = {"model": label, "checkpoint": str(ckpt), "operating_points": names}

    fp32_all, t_all = export(ckpt, work / f"{label}-fp32", "android-fp32", None)
    fp32_one, _ = export(ckpt, work / f"{label}-fp32-one", "android-fp32", [full.name])
    separate = 0
    for name in names if separate_programs else []:
        single, _ = export(ckpt, work / f"{label}-single-{name}", "android-fp32", [name])
        separate += single["bytes"]
    int8, t_int8 = export(ckpt, work / f"{label}-int8", "android-int8", None)
    q4, t_q4 = export(ckpt, work / f"{label}-8da4w", "android-8da4w", None)
    weights = sum(t.numel() * 4 for t in ck.tensors.values())
    result["bytes"] = {
        "fp32_weights": weights,
        "fp32_all": fp32_all["bytes"],
        "fp32_one": fp32_one["bytes"],
        "separate_programs": separate or None,
        "int8_all": int8["bytes"],
        "8da4w_all": q4["bytes"],
    }
    result["export_s_per_method"] = {
        "fp32": t_all / len(fp32_all["methods"]),
        "int8": t_int8 / len(int8["methods"]),
        "8da4w": t_q4 / len(q4["methods"]),
    }

    models = ck.models()
    res = ck.cfg.resolution
    programs = {r: ExecuTorchProgram(work / f"{label}-{r}" / "model.pte") for r in ("fp32", "int8", "8da4w")}
    attention = target_recipe("android-fp32", "android").attention
    with tempfile.TemporaryDirectory() as tmp:
        latency = {
            p.name: point_latency(models, p, res, attention, programs, p in (full, light), runs, Path(tmp))
            for p in points
        }
        full_unit = denoise_unit(models, full, res, attention)
        share = delegate_share(work / f"{label}-fp32", full_unit.method, list(full_unit.example_inputs), runs)
    gflops = {
        p["name"]: p["gflops"]
        for p in json.loads((work / f"{label}-fp32" / "manifest.json").read_text())["operating_points"]
    }
    achieved = gflops[full.name] / latency[full.name]["fp32_pte"]  # GFLOP per ms -> x1000 GFLOP/s
    result.update(
        latency_ms=latency,
        gflops=gflops,
        delegate_share=share,
        achieved_gflops_per_s=achieved * 1000,
        gemm_ceiling_gflops_per_s=ceiling,
        gemm_fraction=achieved * 1000 / ceiling,
        elastic_range=latency[full.name]["fp32_pte"] / latency[light.name]["fp32_pte"],
        fp32_pte_over_ort=latency[full.name]["fp32_pte"] / latency[full.name]["ort"],
        bytes_one_over_all=fp32_all["bytes"] / fp32_one["bytes"],
        int8_bytes=int8["bytes"] / fp32_all["bytes"],
        **{"8da4w_bytes": q4["bytes"] / fp32_all["bytes"]},
    )
    return result


def report(r: dict) -> None:
    b = r["bytes"]
    print(f"\n== {r['model']} ({len(r['operating_points'])} operating points) ==")
    rows = [
        ["fp32, one op point", b["fp32_one"] / 1e6, 1.0],
        ["fp32, all op points", b["fp32_all"] / 1e6, b["fp32_all"] / b["fp32_one"]],
        ["int8, all (vs fp32 all)", b["int8_all"] / 1e6, b["int8_all"] / b["fp32_all"]],
        ["8da4w, all (vs fp32 all)", b["8da4w_all"] / 1e6, b["8da4w_all"] / b["fp32_all"]],
    ]
    if b["separate_programs"]:
        separate = b["separate_programs"]
        rows.insert(2, ["fp32, separate programs", separate / 1e6, separate / b["fp32_one"]])
    print_table(["bundle", "MB", "ratio"], rows)
    cols = ["op point", "GFLOPs", "fp32 .pte ms", "int8 ms", "8da4w ms", "eager ms", "ORT ms", ".pte/ORT"]
    rows = []
    for name, row in r["latency_ms"].items():
        ort = row.get("ort")
        rows.append(
            [
                name,
                r["gflops"][name],
                row["fp32_pte"],
                row.get("int8_pte", "-"),
                row.get("8da4w_pte", "-"),
                row.get("eager", "-"),
                ort or "-",
                row["fp32_pte"] / ort if ort else "-",
            ]
        )
    print_table(cols, rows)
    print(f"delegate share of denoise time (full op point): {r['delegate_share']:.1%}")
    print(
        f"achieved {r['achieved_gflops_per_s']:.1f} GFLOP/s vs XNNPACK GEMM ceiling "
        f"{r['gemm_ceiling_gflops_per_s']:.1f} ({r['gemm_fraction']:.1%})"
    )
    print(
        f"elastic range: {r['elastic_range']:.1f}x; export s/method: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r["export_s_per_method"].items())
    )
    for key, target in TARGETS.items():
        print(f"  target {target}: measured {r[key]:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["demo", "mobile", "both"], default="both")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--no-separate", action="store_true", help="skip exporting every point as its own program (the slow part)"
    )
    args = parser.parse_args()
    silence_library_noise()
    set_all_threads(args.threads)
    results = {"threads": args.threads, "runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["gemm_ceiling_gflops_per_s"] = ceiling = gemm_ceiling(args.runs)
        models = []
        if args.model in ("demo", "both"):
            models.append(("demo", demo_checkpoint_path()))
        if args.model in ("mobile", "both"):
            cfg = mobile_config()
            path = work / "mobile.safetensors"
            save_checkpoint(path, cfg, random_weights(cfg, 0))
            models.append(("mobile", path))
        results["models"] = []
        for label, ckpt in models:
            r = measure(label, ckpt, args.runs, work, ceiling, separate_programs=not args.no_separate)
            report(r)
            results["models"].append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
