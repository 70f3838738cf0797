"""A stand-in for the `adb` client, for tests: it prints what the real adb prints (wording from AOSP's
packages/modules/adb: `adb devices -l` rows as `"%-22s %s"` + ` usb:... product:... model:... device:...
transport_id:N`; errors `adb: no devices/emulators found`, `adb: more than one device/emulator`,
`adb: device unauthorized.` + its three help lines, `adb: device 'SERIAL' not found`) and emulates a phone's
/data/local/tmp in a folder, and an executor_runner whose log lines use the runner's own format strings
(see README.md here), or the host build of elasticdit-run for `./elasticdit-run` (scenario "elasticdit_run").
Behaviour comes from $FAKE_ADB_STATE/scenario.json; every call is appended to
$FAKE_ADB_STATE/calls.jsonl.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_ADB_STATE"])
SCENARIO = json.loads((STATE / "scenario.json").read_text())
FS = STATE / "fs"
UNAUTHORIZED = (
    "adb: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
    "Try 'adb kill-server' if that seems wrong.\nOtherwise check for a confirmation dialog on your device."
)
TIME_V = (
    "Real time (s): 0.061000\nSystem time (s): 0.008000\nUser time (s): 0.052000\nMax RSS (KiB): {rss}\n"
    "Major faults: 0\nMinor faults: 3521\nFile system inputs: 0\nFile system outputs: 24\n"
    "Voluntary context switches: 41\nInvoluntary context switches: 6\n"
)


def fail(msg: str, code: int = 1) -> None:
    sys.stderr.write(msg + "\n")
    sys.exit(code)


def local(remote: str) -> Path:
    return FS / remote.lstrip("/")


def bump(name: str) -> int:
    path = STATE / name
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def log_line(level: str, t: float, line: int, msg: str) -> str:
    us = int(t * 1e6)
    return f"{level} 00:00:{us // 1_000_000:02d}.{us % 1_000_000:06d} executorch:executor_runner.cpp:{line}] {msg}\n"


def runner(cmd: str) -> None:
    n = bump("runner_calls")
    if SCENARIO.get("hang"):
        time.sleep(60)
    if SCENARIO.get("gone_after") is not None and n > SCENARIO["gone_after"]:
        (STATE / "gone").write_text("1")
        fail(f"adb: device '{SCENARIO['devices'][0]['serial']}' not found")
    flags = dict(re.findall(r"--(\w+)=(\S+)", cmd))
    workdir = re.match(r"cd (\S+) &&", cmd).group(1)
    if not local(workdir + "/executor_runner").exists() or not local(workdir + "/" + flags["model_path"]).exists():
        fail("/system/bin/sh: ./executor_runner: inaccessible or not found", 127)
    n_exec = int(flags["num_executions"])
    err = log_line("I", 0.0009, 448, f"Resetting threadpool with num threads = {flags.get('cpu_threads', -1)}")
    err += log_line("I", 0.0021, 584, f"Model file {flags['model_path']} is loaded.")
    err += log_line("I", 0.0021, 594, f"Using method {flags['method_name']}")
    load = 20.0 if n_exec == 1 else 12.5
    err += log_line("I", 0.02, 735, f"Model loaded in {load:f} ms.")
    total = 0.0
    traced = 1.0 + SCENARIO.get("trace_overhead", 0.2) * ("etdump_path" in flags)  # ETDump tracing costs time
    for i in range(n_exec):
        ms = (4.0 if i == 0 else 2.0 + 0.1 * i) * traced
        total += ms
        err += log_line("I", 0.03, 878, f"Iteration {i + 1} of {n_exec}: {ms:f} ms")
    err += log_line("I", 0.04, 891, f"Model executed successfully {n_exec} time(s) in {total:f} ms.")
    err += log_line("I", 0.04, 898, "1 outputs: ")
    if "etdump_path" in flags:
        dump = local(workdir + "/" + flags["etdump_path"])
        src = SCENARIO.get("etdump")
        dump.write_bytes(Path(src).read_bytes() if src else b"")
        err += log_line("I", 0.05, 295, f"ETDump written to file '{flags['etdump_path']}'.")
    if cmd.split("&& ", 1)[1].startswith("toybox time -v"):
        err += TIME_V.format(rss=SCENARIO.get("rss_kb", {}).get(flags["method_name"], 40000))
    sys.stdout.write("OutputX 0: tensor(sizes=[1, 16, 16, 16], [\n  0.0253906, -0.0612793, \n])\n")
    sys.stderr.write(err)


def app_runner(cmd: str) -> None:
    """`cd W && ./elasticdit-run ARGS`: the host build of elasticdit-run named by the scenario runs ARGS in the
    emulated folder, so its output is the real runner's (the pushed file stands for the arm64 build)."""
    n = bump("runner_calls")
    if SCENARIO.get("gone_after") is not None and n > SCENARIO["gone_after"]:
        (STATE / "gone").write_text("1")
        fail(f"adb: device '{SCENARIO['devices'][0]['serial']}' not found")
    workdir, rest = re.match(r"cd (\S+) && \./elasticdit-run (.*)$", cmd).groups()
    if not local(workdir + "/elasticdit-run").exists():
        fail("/system/bin/sh: ./elasticdit-run: inaccessible or not found", 127)
    done = subprocess.run([SCENARIO["elasticdit_run"], *shlex.split(rest)], cwd=local(workdir), capture_output=True)
    sys.stdout.buffer.write(done.stdout)
    sys.stderr.buffer.write(done.stderr)
    sys.exit(done.returncode)


def shell(cmd: str) -> None:
    if cmd == "getprop":
        for k, v in SCENARIO.get("props", {}).items():
            print(f"[{k}]: [{v}]")
    elif cmd.startswith("getprop "):
        print(SCENARIO.get("props", {}).get(cmd.split()[1], ""))
    elif cmd == "cat /proc/meminfo":
        print("MemTotal:       11787360 kB\nMemFree:          912340 kB")
    elif cmd.startswith("mkdir -p "):
        local(cmd.split()[-1]).mkdir(parents=True, exist_ok=True)
    elif cmd.startswith("chmod "):
        pass
    elif cmd.startswith("rm -rf "):
        shutil.rmtree(local(cmd.split()[-1]), ignore_errors=True)
    elif cmd == "toybox time -v true":
        if SCENARIO.get("time_v", True):
            sys.stderr.write(TIME_V.format(rss=1200))
        else:
            fail("toybox: Unknown command time")
    elif "./elasticdit-run" in cmd:
        app_runner(cmd)
    elif "./executor_runner" in cmd:
        runner(cmd)
    else:
        fail(f"/system/bin/sh: {cmd.split()[0]}: inaccessible or not found", 127)


def main(argv: list[str]) -> None:
    with (STATE / "calls.jsonl").open("a") as f:
        f.write(json.dumps(argv) + "\n")
    serial = None
    if argv[:1] == ["-s"]:
        serial, argv = argv[1], argv[2:]
    devices = SCENARIO.get("devices", [])
    if argv[:1] == ["devices"]:
        print("List of devices attached")
        for d in devices:
            extra = " ".join(f"{k}:{v}" for k, v in d.get("props", {}).items())
            print(f"{d['serial']:<22} {d['state']} {extra}".rstrip())
        print()
        return
    if (STATE / "gone").exists():
        fail(f"adb: device '{serial}' not found")
    if not devices:
        fail("adb: no devices/emulators found")
    if serial is None and len(devices) > 1:
        fail("adb: more than one device/emulator")
    dev = next((d for d in devices if d["serial"] == serial), None) if serial else devices[0]
    if dev is None:
        fail(f"adb: device '{serial}' not found")
    if dev["state"] == "unauthorized":
        fail(UNAUTHORIZED)
    cmd, *rest = argv
    if cmd == "shell":
        shell(" ".join(rest))
    elif cmd == "push":
        src, dst = Path(rest[0]), local(rest[1])
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        print(f"{src}: 1 file pushed, 0 skipped. 35.1 MB/s ({src.stat().st_size} bytes in 0.010s)")
    elif cmd == "pull":
        src = local(rest[0])
        if not src.exists():
            fail(f"adb: error: failed to stat remote object '{rest[0]}': No such file or directory")
        shutil.copyfile(src, rest[1])
        print(f"{rest[0]}: 1 file pulled, 0 skipped. 40.2 MB/s ({src.stat().st_size} bytes in 0.001s)")
    elif cmd == "logcat":
        print("--------- beginning of main")
    else:
        fail(f"adb: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
