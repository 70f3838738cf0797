"""Profile an Android bundle on a phone over adb with ExecuTorch's `executor_runner`.

The real `adb` client runs through subprocess: `adb devices -l` to pick the phone, `push` the user's arm64
`executor_runner` and the bundle's .pte to a fresh folder under /data/local/tmp, `shell` the runner once per
method (`--model_path --method_name --num_executions --cpu_threads [--etdump_path]`), parse its log lines, `pull`
the ETDump for the per-op breakdown, and remove the folder at the end whatever happened.

Per method: one run with 1 execution (its "Model loaded in" line is the first load), one with warmup + runs
executions (warm load, the per-iteration lines after the warmup, and the process' max RSS from toybox `time -v`
when the phone has it), both untraced; then, for the per-op breakdown, one run of warmup + OPS_RUNS executions
with `--etdump_path` (tracing costs time, so it never touches the timed figures).

Error messages come from adb's own wording (packages/modules/adb transport.cpp `acquire_one_transport`):
"no devices/emulators found", "more than one device/emulator", "device unauthorized.", "device offline",
"device 'SERIAL' not found". adb prints them as `adb: <message>` (older releases `error: <message>`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeviceError
from ..targets.android.etdump import OPS_RUNS
from .errors import DeviceGoneError
from .executor_runner import (
    _ITER,
    _NOT_FOUND,
    RUNNER_NAME,
    RunnerLog,
    check_runner,
    last_logcat_run,
    parse_runner_output,
    runner_command,
)

INSTALL_HINT = (
    "install Android platform-tools (https://developer.android.com/tools/releases/platform-tools) and put "
    "`adb` on PATH, or point $ADB at it"
)
DEVICE_ROOT = "/data/local/tmp"


@dataclass
class AdbDevice:
    serial: str
    state: str
    props: dict[str, str] = field(default_factory=dict)


def parse_devices(text: str) -> list[AdbDevice]:
    """`adb devices -l`: 'List of devices attached' then `SERIAL STATE key:value ...` per line."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        if "no permissions" in line:
            state, rest = "no permissions", []
        else:
            state, rest = parts[1], parts[2:]
        props = dict(tok.split(":", 1) for tok in rest if ":" in tok)
        devices.append(AdbDevice(parts[0], state, props))
    return devices


def classify(stderr: str, serial: str | None, started: bool, what: str) -> DeviceError:
    """adb's own error text -> an error that names the fix."""
    text = stderr.strip()
    low = text.lower()
    who = f"device {serial}" if serial else "the device"
    if "more than one device" in low or "more than one emulator" in low:
        return DeviceError(
            "several Android devices are connected: pick one with --device adb:SERIAL (serials: `adb devices -l`)"
        )
    if "unauthorized" in low:
        return DeviceError(
            f"{who} is unauthorized: unlock the phone and accept the 'Allow USB debugging?' "
            "prompt, then check `adb devices`"
        )
    if "authorizing" in low or "connecting" in low:
        return DeviceError(
            f"{who} is still connecting/authorizing: accept the prompt on the phone, wait a few seconds and retry"
        )
    if "no permissions" in low:
        return DeviceError(
            "adb has no permission to open the USB device: install Android's udev rules "
            "(e.g. apt install android-sdk-platform-tools-common), add yourself to plugdev, replug"
        )
    if "cannot connect to daemon" in low or "failed to start daemon" in low:
        return DeviceError(f"the adb server does not start ({text.splitlines()[-1]}): run `adb kill-server` and retry")
    gone = (
        ("not found" in low and "device" in low)
        or "no devices/emulators found" in low
        or "no devices found" in low
        or "device offline" in low
        or "error: closed" in low
        or "connection reset" in low
        or "protocol fault" in low
    )
    if gone and started:
        return DeviceGoneError(
            f"{who} went away during `{what}` ({text.splitlines()[-1]}); results measured "
            "before that are kept and the report is marked incomplete"
        )
    if "no devices/emulators found" in low or "no devices found" in low:
        return DeviceError(
            "no Android device is connected (adb: no devices/emulators found): connect a phone "
            "with USB debugging on (Settings > Developer options) and check `adb devices`"
        )
    if "device offline" in low:
        return DeviceError(f"{who} is offline: reconnect the cable or run `adb reconnect`")
    if "not found" in low and "device" in low:
        return DeviceError(f"no device with serial {serial} is connected (`adb devices -l` lists the serials)")
    last = text.splitlines()[-1] if text else "no message"
    return DeviceError(f"`{what}` failed: {last}")


class Adb:
    def __init__(self, exe: str | None = None, timeout: float = 600.0):
        found = exe or os.environ.get("ADB") or shutil.which("adb")
        if not found or not (Path(found).is_file() or shutil.which(found)):
            raise DeviceError(f"adb not found: {INSTALL_HINT}")
        self.exe = found
        self.timeout = timeout
        self.serial: str | None = None
        self.started = False  # set once the device is chosen: failures after this mean it went away

    def run(self, *args: str, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.exe, *(["-s", self.serial] if self.serial else []), *args]
        what = "adb " + " ".join(args[:2])
        limit = timeout or self.timeout
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, errors="replace")
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"`{what}` did not finish within {limit:.0f} s: the phone or adb hangs; unplug and replug it (or "
                "`adb kill-server`), or allow longer with --timeout"
            ) from None
        except OSError as exc:
            raise DeviceError(f"cannot run {self.exe}: {exc}; {INSTALL_HINT}") from None
        if check and done.returncode != 0:
            raise classify(done.stderr or done.stdout, self.serial, self.started, what)
        return done

    def devices(self) -> list[AdbDevice]:
        return parse_devices(self.run("devices", "-l").stdout)

    def select(self, serial: str | None) -> AdbDevice:
        devices = self.devices()
        if serial:
            chosen = next((d for d in devices if d.serial == serial), None)
            if chosen is None:
                known = ", ".join(d.serial for d in devices) or "none"
                raise DeviceError(f"no device with serial {serial} is connected (connected: {known})")
        else:
            if not devices:
                raise classify("adb: no devices/emulators found", None, False, "adb devices")
            if len(devices) > 1:
                listing = ", ".join(f"{d.serial} ({d.props.get('model', d.state)})" for d in devices)
                raise DeviceError(
                    f"several Android devices are connected ({listing}): pick one with --device adb:SERIAL"
                )
            chosen = devices[0]
        if chosen.state in ("unauthorized", "offline", "no permissions", "authorizing", "connecting"):
            raise classify(f"adb: device {chosen.state}", chosen.serial, False, "adb devices")
        if chosen.state != "device":
            raise DeviceError(
                f"device {chosen.serial} is in '{chosen.state}' mode, not booted into Android: "
                "reboot it normally (`adb reboot`)"
            )
        self.serial = chosen.serial
        self.started = True
        return chosen

    def shell(self, command: str, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("shell", command, timeout=timeout, check=check)

    def props(self) -> dict[str, str]:
        out = self.shell("getprop").stdout
        return dict(re.findall(r"^\[([^\]]+)\]: \[([^\]]*)\]", out, re.M))


def device_info(adb: Adb, dev: AdbDevice, threads: int | None) -> dict[str, Any]:
    props = adb.props()
    ram_mb = None
    meminfo = adb.shell("cat /proc/meminfo", check=False).stdout
    if m := re.search(r"MemTotal:\s+(\d+) kB", meminfo):
        ram_mb = round(int(m.group(1)) / 1024)
    from ..devices_registry import match_adb_model

    model = props.get("ro.product.model") or dev.props.get("model", "").replace("_", " ")
    profile = match_adb_model(model)
    return {
        "kind": "adb",
        "serial": dev.serial,
        "name": model,
        "manufacturer": props.get("ro.product.manufacturer"),
        "soc": " ".join(x for x in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if x) or None,
        "abi": props.get("ro.product.cpu.abi"),
        "android": props.get("ro.build.version.release"),
        "sdk": props.get("ro.build.version.sdk"),
        "ram_mb": ram_mb,
        "threads": threads,
        "profile": profile.name if profile else None,
        "backend": "ExecuTorch (XNNPACK), executor_runner",
    }


class AdbSession:
    """One profile run on one phone: a device folder that is always removed at the end."""

    runner_name = RUNNER_NAME  # what the pushed runner is called on the phone (profile/elasticdit_run.py: its own)

    def __init__(self, adb: Adb, runner: Path, threads: int | None, timeout: float):
        self.adb, self.runner, self.threads, self.timeout = adb, runner, threads, timeout
        self.workdir = f"{DEVICE_ROOT}/elasticdit-{uuid.uuid4().hex[:10]}"
        self.drop_flags: frozenset[str] = frozenset()
        self.notes: list[str] = []
        self.time_v = False

    def setup(self, bundle: Path, files: list[str]) -> None:
        abi = self.adb.shell("getprop ro.product.cpu.abi").stdout.strip()
        if abi and abi != "arm64-v8a":
            raise DeviceError(f"the phone's ABI is {abi}; this profiler runs arm64-v8a executor_runner builds")
        self.adb.shell(f"mkdir -p {shlex.quote(self.workdir)}")
        self.adb.run("push", str(self.runner), f"{self.workdir}/{self.runner_name}")
        self.adb.shell(f"chmod 755 {shlex.quote(self.workdir + '/' + self.runner_name)}")
        for name in files:
            self.adb.run("push", str(bundle / name), f"{self.workdir}/{name}")
        probe = self.adb.shell("toybox time -v true", check=False)
        self.time_v = "Max RSS" in (probe.stdout + probe.stderr)
        if not self.time_v:
            self.notes.append("toybox `time -v` is missing on this phone: no peak memory")

    def cleanup(self) -> None:
        with contextlib.suppress(DeviceError):  # the phone is gone or hangs: nothing left to clean from here
            self.adb.shell(f"rm -rf {shlex.quote(self.workdir)}", timeout=60, check=False)

    def invoke(self, entry: Any, executions: int, etdump: str | None, time_v: bool) -> RunnerLog:
        for _ in range(4):  # drop flags an older runner does not know (one per retry)
            cmd = runner_command(
                self.workdir,
                entry.file,
                entry.method,
                executions,
                self.threads,
                etdump,
                time_v,
                self.drop_flags,
                entry.data_file,
            )
            done = self.adb.shell(cmd, check=False, timeout=self.timeout)
            text = done.stdout + "\n" + done.stderr
            if done.returncode != 0 and not _ITER.search(text) and _looks_like_adb_failure(text):
                raise classify(text, self.adb.serial, True, "adb shell executor_runner")
            log = parse_runner_output(text)
            if log.unknown_flag and log.unknown_flag not in self.drop_flags:
                self.drop_flags |= {log.unknown_flag}
                self.notes.append(f"this executor_runner has no --{log.unknown_flag}")
                continue
            if log.load_ms is None and not log.iterations and log.error is None and done.returncode == 0:
                # android-PAL builds log to logcat, not to the shell
                cat = self.adb.run("logcat", "-d", "-s", "ExecuTorch:*", check=False).stdout
                log = parse_runner_output(last_logcat_run(cat) + "\n" + text)
            if log.error:
                raise DeviceError(f"{entry.method}: {log.error}")
            if done.returncode != 0:
                if _NOT_FOUND.search(text):
                    raise DeviceError(f"the phone cannot execute {RUNNER_NAME} ({text.strip().splitlines()[-1]})")
                raise DeviceError(
                    f"{entry.method}: executor_runner exited with {done.returncode}: "
                    f"{(text.strip().splitlines() or ['no output'])[-1]}"
                )
            return log
        raise DeviceError("executor_runner keeps rejecting its flags: build a current one (docs/profiling.md)")

    def measure_method(self, entry: Any, runs: int, warmup: int, with_ops: bool) -> dict[str, Any]:
        """The first load, then the timed executions, both without ETDump tracing (it adds 13-20% to small
        methods); the per-op breakdown comes from a third, traced run of OPS_RUNS executions."""
        first = self.invoke(entry, 1, None, False)
        main = self.invoke(entry, warmup + runs, None, self.time_v)
        iterations = main.iterations[warmup:]
        if not iterations and main.total_ms and main.executions:
            iterations = [main.total_ms / main.executions]
            self.notes.append(
                "only the runner's mean per execution is known (no per-iteration lines; warm-up runs included)"
            )
        if not iterations:
            raise DeviceError(f"{entry.method}: no timing lines in executor_runner's output")
        return {
            "method": entry.method,
            "kind": str(entry.kind),
            "load_ms": {"first": first.load_ms, "warm": main.load_ms},
            "ms": iterations,
            "ops": self.op_breakdown(entry, warmup) if with_ops else None,
            "max_rss_mb": round(main.max_rss_kb / 1024, 2) if main.max_rss_kb else None,
        }

    def op_breakdown(self, entry: Any, warmup: int) -> dict[str, Any] | None:
        if "etdump_path" in self.drop_flags:
            return None
        remote_dump = f"{entry.method}.etdp"
        self.invoke(entry, warmup + OPS_RUNS, remote_dump, False)
        if "etdump_path" in self.drop_flags:  # this runner turned out not to know the flag
            return None
        from ..targets.android.etdump import ops_from_etdump

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / remote_dump
            self.adb.run("pull", f"{self.workdir}/{remote_dump}", str(local))
            return ops_from_etdump(local)


def _looks_like_adb_failure(text: str) -> bool:
    low = text.lower()
    return any(
        s in low
        for s in ("adb: ", "error: device", "error: closed", "no devices/emulators", "device offline", "unauthorized")
    )


MEMORY_METHOD = (
    "sum of the max RSS (toybox time -v) of the executor_runner processes running the text encoder, this "
    "denoise method and the decoder: an upper bound for one app holding all three (each process' small "
    "runtime baseline is counted once per method)"
)


def measure(
    bundle: Path,
    manifest: Any,
    points: list[Any],
    *,
    serial: str | None,
    runner: Path | None,
    runs: int,
    warmup: int,
    threads: int | None,
    timeout: float = 600.0,
    with_ops: bool = True,
    memory: bool = True,
    adb_exe: str | None = None,
    resolution: tuple[int, int] | None = None,
) -> Iterator[dict[str, Any]]:
    adb = Adb(adb_exe, timeout)
    runner = check_runner(runner)
    dev = adb.select(serial)
    yield {"event": "device", "device": device_info(adb, dev, threads)}
    session = AdbSession(adb, runner, threads, timeout)
    aux = [e for e in (manifest.text_encoder, manifest.decoder_at(resolution)) if e is not None]  # that of `points`
    files = sorted({f for e in [*points, *aux] for f in (e.file, e.data_file) if f})
    try:
        session.setup(bundle, files)
        aux_rss = []
        for entry in aux:
            yield {"event": "stage", "text": f"{entry.method} on {dev.serial}"}
            event = session.measure_method(entry, runs, warmup, with_ops)
            aux_rss.append(event.get("max_rss_mb"))
            yield {"event": "method", **event}
        for point in points:
            yield {"event": "stage", "text": f"{point.name} on {dev.serial}"}
            event = session.measure_method(point, runs, warmup, with_ops)
            mem = None
            rss = [event.get("max_rss_mb"), *aux_rss]
            if memory and all(r is not None for r in rss):
                mem = {"peak_mb": round(sum(rss), 2), "process_peak_mb": event["max_rss_mb"], "method": MEMORY_METHOD}
            yield {"event": "point", "name": point.name, **event, "memory": mem, "notes": sorted(set(session.notes))}
    finally:
        session.cleanup()
