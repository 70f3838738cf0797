"""The trained demo's quality: scorer accuracy per operating point vs GFLOPs (the deployed graphs' GFLOPs) under
GenEval's rule and the strict rule (`elasticdit eval`'s `score` and `strict_score`), the scorer's noise, T-DVAE
reconstruction PSNR, decoder GFLOPs vs SD3's VAE and TAESD3 (demo_decoders.py), and (optionally) an int8 Android
bundle and the other SSBA lowerings against the float32 checkpoint.

python benchmarks/demo_quality.py [--checkpoint CKPT] [--prompts 64] [--seeds 2] [--steps N] [--cfg S]
                                  [--int8 [--int8-ops r1_d6,r2_d4,r4_d3]] [--lowerings]
                                  [--from-sigma 0.5,0.7,0.9 [--from-sigma-ops r1_d6,r4_d3] [--from-sigma-only]]
                                  [--json PATH]

Every accuracy is over the same held-out prompts (`elasticdit eval`'s set) and noise seeds; `--seeds K` repeats
the whole table with K noise-seed offsets (0, 1000, ...) to measure seed variation beside the binomial error.
`--from-sigma` locates where in the noise schedule a checkpoint fails: each prompt's ground-truth render is
encoded, noised to the schedule's first sigma at or below each given value, and only the remaining steps are
sampled (as img2img does); a point that passes from sigma 0.5 but not from 0.9 draws good shapes once the layout
is given and fails at deciding it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from elasticdit.quiet import silence_library_noise

silence_library_noise()

from elasticdit.bundle import sha256_file  # noqa: E402
from elasticdit.bundle.files import check_files  # noqa: E402
from elasticdit.bundle.reader import read_manifest  # noqa: E402
from elasticdit.checkpoint import load_checkpoint  # noqa: E402
from elasticdit.demo.scorer import evaluate  # noqa: E402
from elasticdit.demo.shapes import heldout_prompts, render  # noqa: E402
from elasticdit.demo_checkpoint import demo_checkpoint_path  # noqa: E402
from elasticdit.errors import BundleError  # noqa: E402
from elasticdit.evaluation import PROMPT_SEED, binomial_std, evaluate_source  # noqa: E402
from elasticdit.generation import CheckpointSource, noise_for, open_source, to_uint8  # noqa: E402
from elasticdit.model.sampler import shifted_sigmas  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402
from demo_decoders import decoder_gflops, vae_psnr  # noqa: E402

SEED_STRIDE = 1000
# GenEval's rule under its old keys, the strict rule under "strict_"-prefixed ones
METRICS = {"": "GenEval's rule", "strict_": "strict rule (nothing but the named objects)"}


# ---------------------------------------------------------------------------------------------- quality


def quality_table(source, prompts: int, seeds: int, steps, cfg) -> dict:
    runs = [evaluate_source(source, prompts, None, steps, cfg, seed=k * SEED_STRIDE) for k in range(seeds)]
    rows = []
    for i, first in enumerate(runs[0]["operating_points"]):
        row = {"name": first["name"], "gflops": first["gflops"], "gflops_per_image": first["gflops_per_image"]}
        for m in METRICS:
            scores = [r["operating_points"][i][f"{m}score"] for r in runs]
            mean = sum(scores) / seeds
            row |= {
                f"{m}scores_per_seed": scores,
                f"{m}score": mean,
                f"{m}binomial_std": binomial_std(mean, prompts * seeds),
                f"{m}seed_spread": max(scores) - min(scores),
                f"{m}per_category": {
                    c: sum(r["operating_points"][i][f"{m}per_category"][c] for r in runs) / seeds
                    for c in first["per_category"]
                },
            }
        rows.append(row)
    return {
        "steps": runs[0]["steps"],
        "guidance": runs[0]["guidance"],
        "prompts": prompts,
        "seeds": seeds,
        "operating_points": rows,
    }


def monotonicity(rows: list[dict], metric: str = "") -> dict:
    """Pairs where the cheaper point scores higher than the dearer one by more than 2 sigma of their difference."""
    ordered = sorted(rows, key=lambda r: -r["gflops"])
    rises, worst = [], 0.0
    for heavy, light in itertools.combinations(ordered, 2):
        if light["gflops"] >= heavy["gflops"]:
            continue
        rise = light[f"{metric}score"] - heavy[f"{metric}score"]
        sigma = math.sqrt(heavy[f"{metric}binomial_std"] ** 2 + light[f"{metric}binomial_std"] ** 2)
        worst = max(worst, rise / sigma if sigma else 0.0)
        if rise > 2 * sigma:
            rises.append({"cheaper": light["name"], "dearer": heavy["name"], "rise": rise, "two_sigma": 2 * sigma})
    return {"violations": rises, "max_rise_in_sigmas": worst, "monotone_within_noise": not rises}


@torch.no_grad()
def from_sigma(checkpoint: Path, ops: list[str], sigmas: list[float], prompts: int, steps, cfg) -> dict:
    source = CheckpointSource(checkpoint)
    steps, guidance = source.settings(steps, cfg)
    grid = shifted_sigmas(steps, source.shift)
    vae = source.models.vae
    scenes = heldout_prompts(prompts, PROMPT_SEED)
    texts = [s.prompt for s in scenes]
    images = torch.from_numpy(np.stack([render(s, source.resolution[0]) for s in scenes])).permute(0, 3, 1, 2)
    x0 = vae.scale(vae.encode(images.float() / 255.0))
    noise = torch.cat([noise_for(i, (1, *x0.shape[1:])) for i in range(prompts)])
    rows = []
    for name in ops:
        for target in sigmas:
            start = int((grid[:-1] <= target + 1e-6).nonzero()[0]) if target < 1 else 0
            sigma = float(grid[start])
            xs = (1 - sigma) * x0 + sigma * noise
            out = torch.cat(
                [
                    source.denoise(texts[i : i + 16], xs[i : i + 16], name, steps, guidance, start_step=start)
                    for i in range(0, prompts, 16)
                ]
            )
            report = evaluate([to_uint8(out[j : j + 1]) for j in range(prompts)], texts)
            rows.append(
                {
                    "name": name,
                    "sigma": sigma,
                    "start_step": start,
                    "score": report.accuracy,
                    "strict_score": report.strict_accuracy,
                }
            )
    return {"steps": steps, "guidance": guidance, "prompts": prompts, "rows": rows}


# ---------------------------------------------------------------------------------------------- comparisons


def reusable(folder: Path, checkpoint: Path, ops: list[str]) -> bool:
    """Whether `folder` already holds an intact android-int8 bundle of exactly this checkpoint and these points."""
    try:
        manifest = read_manifest(folder)
    except BundleError:
        return False
    return (
        manifest["checkpoint_sha256"] == sha256_file(checkpoint)
        and manifest["recipe"].get("name") == "android-int8"
        and sorted(p["name"] for p in manifest["operating_points"]) == sorted(ops)
        and all(row["ok"] for row in check_files(folder, manifest))
    )


def int8_bundle(checkpoint: Path, ops: list[str], prompts: int, steps, cfg, fp32: dict, out: Path | None) -> dict:
    from elasticdit.exporter import ExportRequest, export_bundle

    folder = out or Path(tempfile.mkdtemp(prefix="demo-int8-")) / "bundle"
    if not reusable(folder, checkpoint, ops):
        export_bundle(
            ExportRequest(checkpoint, "android", folder, recipe="android-int8", ops=ops, progress=False, force=True)
        )
    report = evaluate_source(open_source(folder), prompts, ops, steps, cfg, seed=0)
    rows = []
    for r in report["operating_points"]:
        row = {"name": r["name"]}
        for m in METRICS:
            reference = next(f for f in fp32["operating_points"] if f["name"] == r["name"])[f"{m}scores_per_seed"][0]
            delta = r[f"{m}score"] - reference
            row |= {
                f"{m}int8_score": r[f"{m}score"],
                f"{m}fp32_score": reference,
                f"{m}delta": delta,
                f"{m}within_0_03": abs(delta) <= 0.03,
            }
        rows.append(row)
    return {"bundle": str(folder), "recipe": "android-int8", "operating_points": rows}


def lowerings(checkpoint: Path, prompts: int, steps, cfg, fp32: dict) -> dict:
    from elasticdit.ssba.lowering import lowering_names

    models_cfg = load_checkpoint(checkpoint).cfg
    sparse = (
        [r["name"] for r in fp32["operating_points"] if r["name"].startswith("r1_")] if models_cfg.ssba.enabled else []
    )
    reference = {r["name"]: r for r in fp32["operating_points"]}
    out = {}
    for kind in lowering_names():
        if kind == "masked":
            continue
        report = evaluate_source(CheckpointSource(checkpoint, attention=kind), prompts, sparse, steps, cfg, seed=0)
        out[kind] = []
        for r in report["operating_points"]:
            row = {"name": r["name"]}
            for m in METRICS:
                masked = reference[r["name"]][f"{m}scores_per_seed"][0]
                row |= {f"{m}score": r[f"{m}score"], f"{m}masked_score": masked, f"{m}delta": r[f"{m}score"] - masked}
            out[kind].append(row)
    return {"sparse_points": sparse, "lowerings": out}


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the demo checkpoint")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--psnr-images", type=int, default=256)
    parser.add_argument("--int8", action="store_true", help="export an android-int8 bundle and score it")
    parser.add_argument("--int8-ops", default="r1_d6,r2_d4,r4_d3")
    parser.add_argument(
        "--int8-bundle",
        type=Path,
        default=None,
        help="write the int8 bundle here, or reuse it if it is this checkpoint's",
    )
    parser.add_argument("--lowerings", action="store_true", help="score every other SSBA lowering on ratio 1")
    parser.add_argument(
        "--from-sigma", default=None, help="comma-separated sigmas: score sampling started from noised renders"
    )
    parser.add_argument("--from-sigma-ops", default="r1_d6,r4_d3")
    parser.add_argument("--from-sigma-only", action="store_true", help="skip everything else")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or demo_checkpoint_path()
    ck = load_checkpoint(checkpoint)
    models = ck.models()
    result: dict = {"checkpoint": str(checkpoint), "sha256": ck.sha256}

    if args.from_sigma_only:
        if not args.from_sigma:
            parser.error("--from-sigma-only needs --from-sigma")
        result["from_sigma"] = report_from_sigma(args, checkpoint)
        return write_json(args.json, result)

    source = CheckpointSource(checkpoint)
    q = result["quality"] = quality_table(source, args.prompts, args.seeds, args.steps, args.cfg)
    rows = q["operating_points"]
    full, light = rows[0], min(rows, key=lambda r: r["gflops"])
    mono = result["monotonicity"] = monotonicity(rows)
    strict_mono = result["strict_monotonicity"] = monotonicity(rows, "strict_")
    result["targets"] = {  # the targets are GenEval's rule's; the strict rule's figures are stated beside them
        "full_score": full["score"],
        "full_meets_0_80": full["score"] >= 0.80,
        "lightest": light["name"],
        "lightest_score": light["score"],
        "lightest_meets_0_50": light["score"] >= 0.50,
        "gflops_ratio_full_to_lightest": full["gflops"] / light["gflops"],
        "lightest_meets_8x": full["gflops"] / light["gflops"] >= 8,
        "monotone_within_noise": mono["monotone_within_noise"],
        "strict_full_score": full["strict_score"],
        "strict_lightest_score": light["strict_score"],
        "strict_monotone_within_noise": strict_mono["monotone_within_noise"],
    }
    print(
        f"\n{checkpoint}: {args.prompts} held-out prompts x {args.seeds} noise seeds, {q['steps']} steps, "
        f"cfg {q['guidance']:g}"
    )
    for m, label in METRICS.items():
        print_quality(rows, m, label, result[f"{m}monotonicity"])

    psnr = result["tdvae_psnr"] = vae_psnr(models, args.psnr_images)
    print(
        f"\nT-DVAE reconstruction on {psnr['images']} held-out renders at {psnr['resolution']} px: "
        f"{psnr['psnr_db']:.2f} dB (mean per image {psnr['psnr_db_mean_per_image']:.2f}, worst "
        f"{psnr['psnr_db_worst_image']:.2f}); target >= 28 dB: {'met' if psnr['psnr_db'] >= 28 else 'MISSED'}"
    )

    flops = result["decoder_gflops"] = [decoder_gflops(models, side) for side in (ck.cfg.resolution[0], 512)]
    print()
    print_table(
        ["px", "T-DVAE GF", "SD3-VAE GF", "TAESD3 GF", "vs SD3", "vs TAESD3", "<=1/8 SD3", "<=TAESD3"],
        [
            [
                f["resolution"],
                f["tdvae_gflops"],
                f["sd3_vae_gflops"],
                f["taesd3_gflops"],
                f"{f['vs_sd3']:.4f} (1/{1 / f['vs_sd3']:.0f})",
                f"{f['vs_taesd3']:.3f} (1/{1 / f['vs_taesd3']:.1f})",
                f["meets_1_8_of_sd3"],
                f["meets_taesd3"],
            ]
            for f in flops
        ],
    )

    if args.int8:
        ops = [o.strip() for o in args.int8_ops.split(",") if o.strip()]
        res = result["int8"] = int8_bundle(checkpoint, ops, args.prompts, args.steps, args.cfg, q, args.int8_bundle)
        print(f"\nandroid-int8 bundle vs float32 checkpoint (seed offset 0): {res['bundle']}")
        print_table(
            ["point", "int8", "fp32", "delta", "|delta|<=0.03", "strict int8", "strict fp32", "strict delta"],
            [
                [r["name"], *(r[k] for k in ("int8_score", "fp32_score", "delta", "within_0_03"))]
                + [r[k] for k in ("strict_int8_score", "strict_fp32_score", "strict_delta")]
                for r in res["operating_points"]
            ],
        )
    if args.lowerings:
        res = result["lowerings"] = lowerings(checkpoint, args.prompts, args.steps, args.cfg, q)
        print(f"\nother attention lowerings vs masked on the sparse points {res['sparse_points']}:")
        print_table(
            ["lowering", "point", "score", "masked", "delta", "strict", "strict masked", "strict delta"],
            [
                [k, *(r[c] for c in ("name", "score", "masked_score", "delta"))]
                + [r[c] for c in ("strict_score", "strict_masked_score", "strict_delta")]
                for k, rs in res["lowerings"].items()
                for r in rs
            ],
        )
    if args.from_sigma:
        result["from_sigma"] = report_from_sigma(args, checkpoint)
    print("\ntargets:", json.dumps(result["targets"]))
    return write_json(args.json, result)


def report_from_sigma(args: argparse.Namespace, checkpoint: Path) -> dict:
    ops = [o.strip() for o in args.from_sigma_ops.split(",") if o.strip()]
    sigmas = [float(v) for v in args.from_sigma.split(",")]
    res = from_sigma(checkpoint, ops, sigmas, args.prompts, args.steps, args.cfg)
    print(f"\nsampling started from held-out renders noised to sigma ({res['steps']} steps in all):")
    print_table(
        ["point", "sigma", "steps run", "score", "strict"],
        [[r["name"], r["sigma"], res["steps"] - r["start_step"], r["score"], r["strict_score"]] for r in res["rows"]],
    )
    return res


def print_quality(rows: list[dict], m: str, label: str, mono: dict) -> None:
    full = rows[0]
    cats = list(full["per_category"])
    print(f"\n{label}:")
    print_table(
        ["point", "GFLOPs/step", "vs full", "score", "+-binom", "per seed", *cats],
        [
            [
                r["name"],
                r["gflops"],
                f"{full['gflops'] / r['gflops']:.1f}x",
                r[f"{m}score"],
                r[f"{m}binomial_std"],
                " ".join(f"{s:.3f}" for s in r[f"{m}scores_per_seed"]),
                *(f"{r[f'{m}per_category'][c]:.2f}" for c in cats),
            ]
            for r in rows
        ],
    )
    print(
        f"monotone within 2 sigma: {mono['monotone_within_noise']} (largest rise of a cheaper point: "
        f"{mono['max_rise_in_sigmas']:.2f} sigma); violations: {mono['violations'] or 'none'}"
    )


def write_json(path: Path | None, result: dict) -> int:
    if path:
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
