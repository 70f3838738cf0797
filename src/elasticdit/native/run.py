"""Run `elasticdit-run` as a subprocess: command lines, its timings document, its named errors.

The runner prints one line `error: <Name>: <message>` on failure (exit code per kind); that becomes a
`NativeRunError` carrying the name. Under emulation (`launcher`, e.g. qemu-aarch64) the timings document is
marked `"emulated": true`: its times are the emulator's, not a device's, and nothing here reports them as a
latency.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .build import AARCH64_SYSROOT, build
from .errors import NativeBuildError, NativeRunError, RunnerError

TIMINGS_FORMAT = "elasticdit-run-timings"
_ERROR = re.compile(r"^error: (\w+): (.*)$")
MARKER = b"ELASTICDIT_RUN_BINARY/1"


def is_elasticdit_run(path: Path) -> bool:
    """Whether a binary is an elasticdit-run build (it embeds a marker string), not e.g. executor_runner."""
    with open(path, "rb") as f:
        return MARKER in f.read()


def qemu_aarch64() -> list[str]:
    """The launcher that runs an aarch64 Linux build here: qemu-user with Debian's aarch64 sysroot."""
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not qemu:
        raise NativeBuildError("running the aarch64 build here needs qemu-user: apt install qemu-user-static")
    if not (AARCH64_SYSROOT / "lib").is_dir():
        raise NativeBuildError(f"{AARCH64_SYSROOT} is missing: apt install g++-aarch64-linux-gnu")
    return [qemu, "-L", str(AARCH64_SYSROOT)]


def parse_error(stderr: str, exit_code: int) -> NativeRunError:
    for line in reversed(stderr.strip().splitlines()):
        if m := _ERROR.match(line.strip()):
            return NativeRunError(m.group(1), m.group(2), exit_code)
    last = (stderr.strip().splitlines() or [f"exit code {exit_code}, no message"])[-1]
    return NativeRunError("Crash", last, exit_code)


@dataclass
class NativeRunner:
    binary: Path
    launcher: Sequence[str] = field(default_factory=list)
    timeout: float = 3600.0

    @classmethod
    def for_target(cls, target: str = "host") -> NativeRunner:
        built = build(target)
        return cls(built.binary, qemu_aarch64() if target == "linux-aarch64" else [])

    @classmethod
    def resolve(cls, runner: str | Path) -> NativeRunner:
        """`--runner`: "native" is this host's build (built now if the cache has none); a path is that build."""
        if str(runner) == "native":
            return cls.for_target("host")
        path = Path(runner).expanduser()
        if not path.is_file():
            raise RunnerError(f"--runner {runner}: no such file (use 'native' or a path to an elasticdit-run build)")
        if not is_elasticdit_run(path):
            raise RunnerError(f"--runner {runner} is not an elasticdit-run binary")
        return cls(path)

    @property
    def emulated(self) -> bool:
        return bool(self.launcher)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [*self.launcher, str(self.binary), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, errors="replace")
        except subprocess.TimeoutExpired:
            raise NativeRunError("Timeout", f"did not finish within {self.timeout:.0f} s", -1) from None
        except OSError as exc:
            raise NativeRunError("Crash", f"cannot start {self.binary}: {exc}", -1) from None
        if done.returncode != 0:
            raise parse_error(done.stderr, done.returncode)
        return done

    def generate(
        self,
        bundle: Path,
        prompt: str,
        noise: np.ndarray | Path,
        output: Path | None = None,
        *,
        op: str | None = None,
        per_step: Sequence[str] | None = None,
        schedule: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        runs: int = 1,
        warmup: int = 0,
        threads: int | None = None,
        warm_load: bool = True,
        dump: Path | None = None,
        resolution: str | None = None,
    ) -> dict[str, Any]:
        """The runner's timings document (format elasticdit-run-timings). `resolution`: "HxW", one of the bundle's
        (default: its default resolution)."""
        with tempfile.TemporaryDirectory(prefix="elasticdit-run-") as tmp:
            noise_path = Path(noise) if isinstance(noise, Path) else Path(tmp) / "noise.npy"
            if not isinstance(noise, Path):
                np.save(noise_path, np.ascontiguousarray(noise, dtype=np.float32))
            args = ["generate", str(bundle), "--prompt", prompt, "--noise", str(noise_path), "--json"]
            args += ["--runs", str(runs), "--warmup", str(warmup)]
            if output is not None:
                args += ["-o", str(output)]
            if op is not None:
                args += ["--op", op]
            if per_step is not None:
                args += ["--per-step", ",".join(per_step)]
            if schedule is not None:
                args += ["--schedule", schedule]
            if resolution is not None:
                args += ["--resolution", resolution]
            if steps is not None:
                args += ["--steps", str(steps)]
            if guidance is not None:
                args += ["--cfg", repr(float(guidance))]
            if threads:
                args += ["--threads", str(threads)]
            if not warm_load:
                args.append("--no-warm-load")
            if dump is not None:
                args += ["--dump", str(dump)]
            doc = parse_timings(self.run(*args).stdout)
        doc["emulated"] = self.emulated
        return doc

    def tokenize(self, bundle: Path, prompts: Sequence[str]) -> list[list[int]]:
        """The ids the bundle's tokenizer gives each prompt (what encode_text receives)."""
        with tempfile.TemporaryDirectory(prefix="elasticdit-run-") as tmp:
            path = Path(tmp) / "prompts.json"
            path.write_text(json.dumps(list(prompts)))
            return json.loads(self.run("tokenize", str(bundle), "--prompts", str(path)).stdout)

    def methods(self, bundle: Path, out: Path, inputs: Path | None = None, threads: int | None = None) -> dict:
        """Every method of the bundle once, on deterministic (or given) inputs; .npy inputs and outputs in `out`."""
        out.mkdir(parents=True, exist_ok=True)
        args = ["methods", str(bundle), "--out", str(out)]
        if inputs is not None:
            args += ["--inputs", str(inputs)]
        if threads:
            args += ["--threads", str(threads)]
        self.run(*args)
        return json.loads((out / "methods.json").read_text())


def parse_timings(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NativeRunError("BadOutput", f"its --json output is not JSON ({exc})", 0) from None
    if not isinstance(doc, dict) or doc.get("format") != TIMINGS_FORMAT or doc.get("version") != 1:
        raise NativeRunError("BadOutput", f"its --json output is not an {TIMINGS_FORMAT} v1 document", 0)
    return doc
