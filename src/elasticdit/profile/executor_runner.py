"""ExecuTorch's `executor_runner` as the adb transport drives it: checking the user's build, its command line, and
reading its log lines (timings, max RSS, failures with the fix they need)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DeviceError

RUNNER_NAME = "executor_runner"


# ELF e_machine values (System V ABI) for the messages; Android arm64-v8a is EM_AARCH64.
EM_AARCH64 = 183
ELF_MACHINES = {3: "x86 (i386)", 8: "MIPS", 40: "32-bit ARM (armeabi-v7a)", 62: "x86-64", 183: "AArch64", 243: "RISC-V"}

# runtime/core/error.h
ET_ERRORS = {
    0x01: "Internal",
    0x02: "InvalidState",
    0x03: "EndOfMethod",
    0x10: "NotImplemented",
    0x11: "NotSupported",
    0x12: "InvalidArgument",
    0x13: "InvalidType",
    0x14: "OperatorMissing",
    0x20: "NotFound",
    0x21: "MemoryAllocationFailed",
    0x22: "AccessFailed",
    0x23: "InvalidProgram",
    0x24: "InvalidExternalData",
    0x25: "OutOfResources",
    0x30: "DelegateInvalidCompatibility",
    0x31: "DelegateMemoryAllocationFailed",
    0x32: "DelegateInvalidHandle",
}
ET_HINTS = {
    "OperatorMissing": "the runner lacks a kernel this program uses: build it with the optimized and quantized "
    "kernels (-DEXECUTORCH_BUILD_KERNELS_OPTIMIZED=ON -DEXECUTORCH_BUILD_KERNELS_QUANTIZED=ON), and with "
    "elasticdit's kernels if the manifest's runtime_ops lists an elasticdit:: op (docs/ssba.md)",
    "NotFound": "the runner was built without a backend or method the program needs: build it with "
    "-DEXECUTORCH_BUILD_XNNPACK=ON",
    "DelegateInvalidCompatibility": "the runner's XNNPACK is older or newer than the exporter's: build "
    "executor_runner from the same ExecuTorch release as the exporter",
    "MemoryAllocationFailed": "the runner's fixed method allocator pool is too small for this method",
}


def elf_machine(path: Path) -> tuple[int, int] | None:
    """(bits, e_machine) of an ELF file, None when it is not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    bits = {1: 32, 2: 64}.get(head[4], 0)
    order = "little" if head[5] == 1 else "big"
    return bits, int.from_bytes(head[18:20], order)


def check_runner(runner: Path | None) -> Path:
    """The user's executor_runner must exist and be an arm64 (AArch64) ELF executable."""
    if runner is None:
        raise DeviceError(
            "--device adb runs ExecuTorch's executor_runner on the phone: pass --runner PATH to one built for "
            "Android arm64-v8a with the event tracer on (how: docs/profiling.md)"
        )
    runner = Path(runner).expanduser()
    if not runner.is_file():
        raise DeviceError(f"runner {runner} does not exist (build it as docs/profiling.md shows, then pass its path)")
    found = elf_machine(runner)
    if found is None:
        raise DeviceError(
            f"runner {runner} is not an ELF executable; pass the executor_runner built by CMake for Android arm64-v8a"
        )
    bits, machine = found
    if machine != EM_AARCH64 or bits != 64:
        name = ELF_MACHINES.get(machine, f"machine {machine}")
        raise DeviceError(
            f"runner {runner} is built for {name} ({bits}-bit), the phone needs arm64-v8a (AArch64): rebuild it "
            "with the NDK toolchain and -DANDROID_ABI=arm64-v8a (docs/profiling.md)"
        )
    return runner


def runner_command(
    workdir: str,
    model: str,
    method: str,
    executions: int,
    threads: int | None,
    etdump: str | None,
    time_v: bool = False,
    drop_flags: frozenset[str] = frozenset(),
    data: str | None = None,
) -> str:
    """The device shell command line for one executor_runner invocation (`data`: the program's `.ptd`, when its
    weights are external)."""
    flags = {
        "model_path": model,
        "data_path": data,
        "method_name": method,
        "num_executions": str(executions),
        "cpu_threads": str(threads if threads else -1),  # -1: the runner picks the performant cores
        "etdump_path": etdump,
    }
    args = [f"--{k}={v}" for k, v in flags.items() if v is not None and k not in drop_flags]
    run = (["toybox", "time", "-v"] if time_v else []) + [f"./{RUNNER_NAME}", *args]
    return f"cd {shlex.quote(workdir)} && " + " ".join(shlex.quote(a) for a in run)


@dataclass
class RunnerLog:
    load_ms: float | None = None
    iterations: list[float] = field(default_factory=list)
    executions: int | None = None
    total_ms: float | None = None
    max_rss_kb: int | None = None
    error: str | None = None
    unknown_flag: str | None = None


_LOADED = re.compile(r"Model loaded in ([0-9.]+) ms")
_ITER = re.compile(r"Iteration (\d+) of (\d+): ([0-9.]+) ms")
_TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\)(?: in ([0-9.]+) ms)?")
_RSS = re.compile(r"Max RSS \(KiB\): (\d+)")
_STATUS = re.compile(
    r"(Loading of method \S+ failed|Execution of method \S+ failed|Failed to get method_meta for \S+:?)"
    r" (?:with status )?(0x[0-9a-fA-F]+)"
)
_PARSE = re.compile(r"Failed to parse model file (\S+)")
_FLAG = re.compile(r"unknown command line flag '(\w+)'")
_NOT_FOUND = re.compile(r"(?:inaccessible or not found|No such file or directory|not executable|Permission denied)")


def parse_runner_output(text: str) -> RunnerLog:
    """Timing, memory and failure lines of an executor_runner run (its stderr/stdout, or logcat lines)."""
    log = RunnerLog()
    for line in text.splitlines():
        if m := _LOADED.search(line):
            log.load_ms = float(m.group(1))
        elif m := _ITER.search(line):
            log.iterations.append(float(m.group(3)))
        elif m := _TOTAL.search(line):
            log.executions = int(m.group(1))
            log.total_ms = float(m.group(2)) if m.group(2) else None
        elif m := _RSS.search(line):
            log.max_rss_kb = int(m.group(1))
        elif m := _STATUS.search(line):
            code = int(m.group(2), 16)
            name = ET_ERRORS.get(code, "unknown status")
            hint = ET_HINTS.get(name)
            log.error = f"{m.group(1)} with status {m.group(2)} ({name})" + (f": {hint}" if hint else "")
        elif m := _PARSE.search(line):
            log.error = f"executor_runner cannot parse {m.group(1)} (not a .pte, or truncated by the push)"
        elif m := _FLAG.search(line):
            log.unknown_flag = m.group(1)
    return log


def last_logcat_run(text: str) -> str:
    """The lines of the newest run in `adb logcat -d -s ExecuTorch` (android PAL builds log there)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "is loaded." in line and "Model file" in line]
    return "\n".join(lines[starts[-1] :]) if starts else ""
