"""Every packaged recipe's accuracy on a checkpoint, as `elasticdit verify` measures it.

python benchmarks/verify_recipes.py [--checkpoint CKPT] [--recipes android-int8,ios-fp16,...] [--ops r1_d6,...]
                                    [--json PATH]
python benchmarks/verify_recipes.py --table JSON...   (the table of earlier runs)

For each recipe: `elasticdit export --recipe R` into a temporary folder, then `elasticdit verify --json` on it
(the real commands, one subprocess each). Per method kind (denoise, decode, encode_text) the worst and best of
verify's two measures over the operating points: the relative error against the reference of the method's own
numerics (the limit the recipe sets), and the SNR against float32 (the floor quantized recipes set). Also the
export's wall time and the bundle's bytes. The JSON holds every method's check as verify printed it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from elasticdit.recipes import packaged_recipes


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return done.stdout


def measure(recipe: str, checkpoint: str | None, ops: str | None, work: Path) -> dict:
    out = work / recipe
    target = packaged_recipes()[recipe].parent.parent.name  # targets/<target>/recipes/<name>.toml
    cmd = ["elasticdit", "export", "--target", target, "--recipe", recipe, "-o", str(out)]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    if ops:
        cmd += ["--ops", ops]
    start = time.perf_counter()
    exported = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if exported.returncode != 0:
        sys.exit(f"export of {recipe} failed: {exported.stderr.strip()[-400:]}")
    verify = ["elasticdit", "verify", str(out), "--json"] + (["--checkpoint", checkpoint] if checkpoint else [])
    report = json.loads(_run(verify))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    sha = json.loads((out / "manifest.json").read_text())["checkpoint_sha256"]
    shutil.rmtree(out)
    return {
        "recipe": recipe,
        "checkpoint_sha256": sha,
        "export_s": round(seconds, 1),
        "bundle_bytes": size,
        "verify": report,
    }


def by_kind(report: dict) -> dict[str, dict]:
    kinds: dict[str, dict] = {}
    for m in report["methods"]:
        empty = {"rel_err": [], "snr_db": [], "lowering": [], "limit": m["limit"], "floor": m["min_snr_db"]}
        k = kinds.setdefault(m["kind"], empty)
        k["rel_err"].append(m["value"])
        k["snr_db"].append(m["snr_db"])
        if m.get("lowering_rel_err") is not None:
            k["lowering"].append(m["lowering_rel_err"])
    return kinds


def _range(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)} to {format(hi, fmt)}"


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | passed | denoise rel err (limit) | denoise SNR dB (floor) | lowering vs masked, fp32"
        " | decode rel err, SNR | encode_text rel err, SNR | export s | bundle MB |",
        "| --- | --- | --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for row in rows:
        kinds = by_kind(row["verify"])
        d = kinds["denoise"]
        floor = "-" if d["floor"] is None else f"{d['floor']:g}"
        cells = [
            row["recipe"],
            "yes" if row["verify"]["passed"] else "**no**",
            f"{_range(d['rel_err'], '.2e')} ({d['limit']:g})",
            f"{_range(d['snr_db'], '.1f')} ({floor})",
            _range(d["lowering"], ".1e") if d["lowering"] else "-",
        ]
        for kind in ("decode", "encode_text"):
            k = kinds.get(kind)
            cells.append("-" if k is None else f"{_range(k['rel_err'], '.1e')}, {_range(k['snr_db'], '.0f')}")
        cells += [f"{row['export_s']:.0f}", f"{row['bundle_bytes'] / 1e6:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--table"]:  # the table of one or more earlier --json files, recipes in the order given
        print(table([row for path in sys.argv[2:] for row in json.loads(Path(path).read_text())["recipes"]]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="default: the demo checkpoint")
    parser.add_argument("--recipes", help="comma-separated names (default: every packaged recipe)")
    parser.add_argument("--ops", help="export only these operating points (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = args.recipes.split(",") if args.recipes else sorted(packaged_recipes())
    unknown = sorted(set(names) - set(packaged_recipes()))
    if unknown:
        sys.exit(f"unknown recipes: {', '.join(unknown)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="verify-recipes-") as tmp:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name}", file=sys.stderr, flush=True)
            rows.append(measure(name, args.checkpoint, args.ops, Path(tmp)))
            if args.json:  # after every recipe, so a long run that stops keeps what it measured
                doc = {"checkpoint": args.checkpoint or "demo", "ops": args.ops or "all", "recipes": rows}
                args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
