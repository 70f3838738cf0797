"""`elasticdit generate BUNDLE --runner native`: the same image as the Python path, made by elasticdit-run.

The seed's noise is drawn here exactly as `generation.noise_for` draws it (torch's generator cannot be
reproduced in C++) and handed to the runner as a .npy file, so `--runner native` and the default runner start
from the same latent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..generation import GenerationError, noise_for


def resolve_runner(runner: str | Path):
    """'native' -> the cached host build (built now if needed); a path -> that elasticdit-run binary."""
    from .run import NativeRunner, is_elasticdit_run

    if str(runner) == "native":
        return NativeRunner.for_target("host")
    path = Path(runner).expanduser()
    if not path.is_file():
        raise GenerationError(f"--runner {runner}: no such file (use 'python', 'native' or a path to elasticdit-run)")
    if not is_elasticdit_run(path):
        raise GenerationError(f"--runner {runner} is not an elasticdit-run binary")
    return NativeRunner(path)


def generate_native(
    bundle: str | Path | None,
    prompt: str,
    output: str | Path,
    op: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    runner: str | Path = "native",
) -> dict[str, Any]:
    from ..manifest import read_manifest

    if bundle is None or not Path(bundle).is_dir():
        raise GenerationError("--runner native runs an Android bundle folder (export one with --target android)")
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if manifest["target"] != "android":
        raise BundleError(f"{bundle} is an {manifest['target']} bundle; --runner native runs android bundles")
    names = [p["name"] for p in manifest["operating_points"]]
    point = op or manifest.get("default_operating_point") or names[0]
    entry = next((p for p in manifest["operating_points"] if p["name"] == point), None)
    if entry is None:
        from ..errors import OperatingPointError

        raise OperatingPointError(f"unknown operating point '{point}'; valid: {', '.join(names)}")
    if steps is not None and steps <= 0:
        raise GenerationError(f"--steps must be positive, got {steps}")
    if guidance is not None and guidance < 0:
        raise GenerationError(f"--cfg must be non-negative, got {guidance}")
    shape = list(next(s["shape"] for s in entry["inputs"] if s["name"] == "latent"))
    shape[0] = 1
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    doc = resolve_runner(runner).generate(
        bundle,
        prompt,
        noise_for(seed, shape).numpy(),
        output,
        op=point,
        steps=steps,
        guidance=guidance,
        threads=threads,
        warm_load=False,
    )
    return {
        "output": str(output),
        "source": str(bundle),
        "kind": "android",
        "runner": "native",
        "prompt": prompt,
        "operating_point": point,
        "gflops": float(entry.get("gflops", 0.0)),
        "steps": doc["steps"],
        "guidance": doc["guidance"],
        "seed": seed,
        "resolution": list(manifest["resolution"]),
        "timings": doc,
    }
