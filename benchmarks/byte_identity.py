"""Do two revisions write the same bundles and JSON documents? (e.g. a refactor that must change no bytes)

python benchmarks/byte_identity.py --before REV --after REV --checkpoint CKPT [--recipes android-fp32,ios-fp16,...]
                                   [--ops r1_d6,r4_d3] [--json PATH] [--keep DIR] [--bytes-only]

Each revision is checked out as a detached git worktree in a temporary folder (removed at the end) and run
through its own CLI (`python -c "from elasticdit.cli import main; main()"` with PYTHONPATH=<worktree>/src) in
this interpreter's environment, so the code is the only variable. Both sides export every recipe from the same
checkpoint (a positional argument in both CLIs) with the same options, one subprocess at a time at niceness 10,
into the same relative path, and every file of each bundle is hashed (sha256, recursively: inside .mlpackage
folders too). Where a recipe's bundles are identical, `verify --json` is compared, and for bundles this host
runs (android, onnx) `generate --json` (and the PNG's bytes) and `eval --json`; once per run `inspect --json`,
`devices --json`, the host `profile --json` of the first android bundle (its shape: numbers masked, they are
measurements) and `plan --json` on the before side's profile. JSON documents are compared with the output and
checkout folders replaced by placeholders and timing fields removed (keys ending in _ms / _s / _seconds,
`seconds`, `load_average`); a command is also compared by its exit code and, when it fails, the first error
line of its stderr. --bytes-only compares the exports (files and `export --json`) and nothing else. Exit
status 1 when a bundle file or a JSON document differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = (
    "android-fp32,android-int8,android-8da4w,ios-fp16,ios-fp32,ios-int8,ios-palettize4,ios-palettize6,"
    "onnx-fp32,onnx-int8"
)
TIMING = re.compile(r"(_ms|_s|_seconds)$|^(seconds|load_average|wall_s)$")
SIDES = ("before", "after")
HOST_RUNS = ("android", "onnx")  # targets whose bundles run on this (Linux) host


def repo_root() -> Path:
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
    return Path(top.stdout.strip())


def hash_tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def strip_timings(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: strip_timings(v) for k, v in doc.items() if not TIMING.search(k)}
    if isinstance(doc, list):
        return [strip_timings(v) for v in doc]
    return doc


class Side:
    """One revision's checkout, its CLI and its output folder."""

    def __init__(self, name: str, rev: str, work: Path, root: Path):
        self.name, self.rev, self.tree, self.out = name, rev, work / f"src-{name}", work / name
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(self.tree), rev], check=True)
        self.out.mkdir()
        self.env = {**os.environ, "PYTHONPATH": str(self.tree / "src")}
        probe = [sys.executable, "-c", "import elasticdit; print(elasticdit.__file__)"]
        found = subprocess.run(probe, env=self.env, capture_output=True, text=True, check=True).stdout.strip()
        if not found.startswith(str(self.tree)):
            sys.exit(f"{name}: elasticdit imports from {found}, not from {self.tree}")

    def run(self, *args: str) -> dict:
        """Run `elasticdit ARGS` in this side's output folder: exit code, JSON (timings removed) or error line."""
        niceness = str(max(0, 10 - os.nice(0)))  # niceness 10 in all, also when this script runs under nice
        cmd = ["nice", "-n", niceness, sys.executable, "-c", "from elasticdit.cli import main; main()", *args]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=self.out, env=self.env, capture_output=True, text=True)
        result: dict = {"rc": done.returncode, "wall_s": round(time.perf_counter() - start, 1)}
        try:
            text = done.stdout.replace(str(self.out), "<out>").replace(str(self.tree), "<checkout>")
            result["json"] = strip_timings(json.loads(text))
        except json.JSONDecodeError:
            result["stdout"] = done.stdout.strip()[-300:]
        if done.returncode:
            errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error")]
            result["error"] = errors[0] if errors else done.stderr[-300:]
        return result


def numbers_masked(doc: object) -> object:
    """A document's shape: every number replaced by its type (for measurements such as a profile's)."""
    if isinstance(doc, dict):
        return {k: numbers_masked(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [numbers_masked(v) for v in doc]
    return type(doc).__name__ if isinstance(doc, int | float) and not isinstance(doc, bool) else doc


def same(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}


def compare_command(sides: dict[str, Side], report: dict, label: str, *args: str, shape: bool = False) -> bool:
    runs = {name: side.run(*args) for name, side in sides.items()}
    if shape:
        for run in runs.values():
            run["json"] = numbers_masked(run.get("json"))
    equal = same(runs["before"], runs["after"])
    report["commands"].append({"command": label, "equal": equal, **runs})
    print(f"  {label}: {'equal' if equal else 'DIFFERENT'} (rc {runs['before']['rc']}/{runs['after']['rc']})")
    return equal


def compare_recipe(
    sides: dict[str, Side], report: dict, recipe: str, checkpoint: str, ops: str, bytes_only: bool
) -> bool:
    target = recipe.split("-")[0]
    row: dict = {"recipe": recipe}
    for name, side in sides.items():
        row[f"export_{name}"] = side.run(
            "export", checkpoint, "--target", target, "--recipe", recipe, "--ops", ops, "-o", recipe, "--json"
        )
    hashes = {name: hash_tree(side.out / recipe) for name, side in sides.items()}
    before, after = hashes["before"], hashes["after"]
    row["identical"] = sorted(k for k in before if after.get(k) == before[k])
    row["differing"] = sorted(k for k in before if k in after and after[k] != before[k])
    row["only_before"] = sorted(set(before) - set(after))
    row["only_after"] = sorted(set(after) - set(before))
    row["export_json_equal"] = same(row["export_before"], row["export_after"])
    report["recipes"].append(row)
    ok = bool(before) and not (row["differing"] or row["only_before"] or row["only_after"]) and row["export_json_equal"]
    print(
        f"{recipe:16} {len(row['identical']):3} identical, {len(row['differing'])} differing, "
        f"{len(row['only_before']) + len(row['only_after'])} one-sided; export --json "
        f"{'equal' if row['export_json_equal'] else 'DIFFERENT'} ({row['export_before']['wall_s']} s / "
        f"{row['export_after']['wall_s']} s)"
    )
    for name in row["differing"] + row["only_before"] + row["only_after"]:
        print(f"  differs: {name}")
    if not ok or bytes_only:
        return ok
    ok &= compare_command(sides, report, f"verify {recipe}", "verify", recipe, "--checkpoint", checkpoint, "--json")
    if target in HOST_RUNS:
        op = ops.split(",")[-1]
        png = ["generate", recipe, "-p", "a red circle left of a blue square", "--op", op, "--steps", "3"]
        ok &= compare_command(sides, report, f"generate {recipe}", *png, "-o", f"{recipe}.png", "--json")
        pngs = {n: hashlib.sha256((s.out / f"{recipe}.png").read_bytes()).hexdigest() for n, s in sides.items()}
        report["commands"][-1]["png_sha256"] = pngs
        if pngs["before"] != pngs["after"]:
            print("  generate: PNG bytes DIFFERENT")
            ok = False
        evaluation = ["eval", recipe, "--prompts", "2", "--steps", "3", "--ops", ops, "--json"]
        ok &= compare_command(sides, report, f"eval {recipe}", *evaluation)
    return ok


def compare_profile_and_plan(sides: dict[str, Side], report: dict, recipe: str) -> bool:
    profile = ["profile", recipe, "--runs", "1", "--warmup", "0", "--out", f"profile-{recipe}", "--json"]
    ok = compare_command(sides, report, f"profile {recipe}", *profile, shape=True)
    results = str(sides["before"].out / f"profile-{recipe}" / "profile.json")
    return ok & compare_command(sides, report, "plan", "plan", "--profile", results, "--budget-ms", "1e6", "--json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--checkpoint", required=True, help="One checkpoint both sides export from.")
    parser.add_argument("--recipes", default=RECIPES)
    parser.add_argument("--ops", default="r1_d6,r4_d3")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--bytes-only", action="store_true", help="Compare the exports only (no other command).")
    parser.add_argument("--keep", type=Path, help="Keep the bundles under this folder (default: removed).")
    args = parser.parse_args()
    checkpoint = str(Path(args.checkpoint).resolve())
    root = repo_root()
    report: dict = {
        "before": args.before,
        "after": args.after,
        "checkpoint": checkpoint,
        "checkpoint_sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(),
        "ops": args.ops,
        "command": " ".join(sys.argv),
        "load_average_start": os.getloadavg(),
        "recipes": [],
        "commands": [],
    }
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="byte-identity-"))
    work.mkdir(parents=True, exist_ok=not args.keep)
    sides: dict[str, Side] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still writes its JSON and cleans up
    try:
        for name in SIDES:
            sides[name] = Side(name, getattr(args, name), work, root)
        ok = True
        if not args.bytes_only:
            ok &= compare_command(sides, report, "inspect", "inspect", checkpoint, "--json")
            ok &= compare_command(sides, report, "devices", "devices", "--json")
        profiled = False
        for recipe in args.recipes.split(","):
            identical = compare_recipe(sides, report, recipe, checkpoint, args.ops, args.bytes_only)
            ok &= identical
            if (
                identical and recipe.startswith("android") and not (profiled or args.bytes_only)
            ):  # once, on the first identical one
                ok &= compare_profile_and_plan(sides, report, recipe)
                profiled = True
    finally:
        report["load_average_end"] = os.getloadavg()
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        for side in sides.values():
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(side.tree)], check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("byte-identical and equal" if ok else "DIFFERENCES (see above)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
