"""Bytes of several resolutions in one bundle against one resolution, on the mobile-scale model (issue 23, item 4).

    nice -n 10 python benchmarks/resolution_bytes.py [--ops r1_d12,r4_d4] [--recipes android-fp32,onnx-fp32]
        [--resolutions 512x512,512x1024,1024x512] [--json out.json]

For each recipe it exports, in this process, the mobile-scale model (benchmarks/common.py: width 512, 12 blocks,
512 px, ratios 1/2/4, SSBA tile 8; random weights: byte counts do not depend on the values) twice with the same
operating points: at the first resolution only, and at every resolution given (`export --resolution` repeated).
It reports each bundle's files and bytes (from the manifest's `files`) and the ratio of the totals; the target is
all resolutions <= 1.05x one. The default resolutions are the mobile preset's 512 px and the two sizes of twice
its area the preset's grid allows: at ratio 4 its 8x8 SSBA tile needs a token grid multiple of 8, so every side a
multiple of 512 px.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import mobile_config, print_table

from elasticdit.checkpoint import save_checkpoint
from elasticdit.exporter import ExportRequest, export_bundle
from elasticdit.model.pipeline import random_weights
from elasticdit.quiet import silence_library_noise

TARGET = 1.05


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        h, _, w = part.strip().partition("x")
        out.append((int(h), int(w)))
    return out


def export(ckpt: Path, out: Path, recipe: str, ops: list[str], resolutions: list[tuple[int, int]]) -> dict:
    target = recipe.split("-")[0]
    start = time.perf_counter()
    request = ExportRequest(ckpt, target, out, recipe=recipe, ops=ops, resolutions=resolutions, progress=False)
    export_bundle(request)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    files = {f["path"]: f["bytes"] for f in manifest["files"]}
    files["manifest.json"] = (out / "manifest.json").stat().st_size
    methods = [p["method"] for p in manifest["operating_points"]]
    methods += [d["method"] for d in [manifest["decoder"], *manifest.get("decoders", [])] if d]
    return {
        "resolutions": [f"{h}x{w}" for h, w in resolutions],
        "methods": methods,
        "files": files,
        "total_bytes": sum(files.values()),
        "export_s": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default="r1_d12,r4_d4", help="operating points (default: the full and lightest)")
    parser.add_argument("--recipes", default="android-fp32,onnx-fp32")
    parser.add_argument("--resolutions", default="512x512,512x1024,1024x512", help="the first is the default")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    silence_library_noise()
    ops = args.ops.split(",")
    resolutions = parse_resolutions(args.resolutions)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="resolution-bytes-") as tmp:
        ckpt = Path(tmp) / "mobile.safetensors"
        cfg = mobile_config()
        save_checkpoint(ckpt, cfg, random_weights(cfg, 0))
        for recipe in args.recipes.split(","):
            one = export(ckpt, Path(tmp) / f"{recipe}-one", recipe, ops, resolutions[:1])
            many = export(ckpt, Path(tmp) / f"{recipe}-many", recipe, ops, resolutions)
            ratio = many["total_bytes"] / one["total_bytes"]
            per_file = {
                name: {"one": one["files"].get(name), "all": many["files"].get(name)}
                for name in sorted(set(one["files"]) | set(many["files"]))
            }
            results.append(
                {
                    "recipe": recipe,
                    "ops": ops,
                    "one": one,
                    "all": many,
                    "per_file": per_file,
                    "ratio": round(ratio, 4),
                    "target": f"all resolutions <= {TARGET}x one",
                    "met": ratio <= TARGET,
                }
            )
            for name, b in per_file.items():
                rows.append([recipe, name, b["one"] or 0, b["all"] or 0])
            rows.append([recipe, "TOTAL", one["total_bytes"], many["total_bytes"]])
            print(f"{recipe}: {len(resolutions)} resolutions / 1 = {ratio:.4f} (target <= {TARGET})", flush=True)
    print_table(["recipe", "file", "bytes, 1 resolution", f"bytes, {len(resolutions)} resolutions"], rows)
    doc = {
        "benchmark": "resolution_bytes",
        "model": "mobile (benchmarks/common.py mobile_config), random weights (bytes do not depend on values)",
        "resolutions": [f"{h}x{w}" for h, w in resolutions],
        "results": results,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
