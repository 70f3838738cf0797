"""Profile a bundle on a Linux board (Raspberry Pi 5, Jetson, ...) over ssh.

The OpenSSH client runs through subprocess: `mktemp -d` a folder on the board, `scp -r` the bundle into it,
run `PYTHON -m elasticdit.profile.remote` there (executorch and elasticdit installed on the board), read its
JSON lines as they come (so a dropped connection keeps what was measured), and `rm -rf` the folder at the end.
Authentication is by key only (`BatchMode=yes`: never a password prompt); the host key is checked against
known_hosts (`StrictHostKeyChecking=yes` with a `--known-hosts` file; OpenSSH's defaults otherwise).
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeviceError
from .errors import DeviceGoneError

INSTALL_HINT = "install the OpenSSH client (e.g. apt install openssh-client)"


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"ssh://{self.dest}" + (f":{self.port}" if self.port else "")


_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@/:\[\]\s]+)(?::(?P<port>\d+))?/?$")
# A host is a DNS name or an IPv4/IPv6 address, a user a POSIX login name: neither may start with '-', so
# neither can ever be read by ssh or scp as an option (`ssh://-oProxyCommand=...`).
HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*)$")
USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def parse_ssh_url(url: str) -> SshTarget:
    m = _URL.match(url.strip())
    if not m:
        raise DeviceError(f"'{url}' is not ssh://[USER@]HOST[:PORT]")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise DeviceError(f"'{url}': port {port} is out of range")
    return checked_target(m.group("host").strip("[]"), m.group("user"), port, url)


def checked_target(host: str, user: str | None, port: int | None, url: str) -> SshTarget:
    """A target whose host and user are plain names or addresses (`DeviceError` naming the bad part)."""
    if not HOST.match(host):
        raise DeviceError(f"'{url}': '{host}' is not a host name or an IP address")
    if user is not None and not USER.match(user):
        raise DeviceError(f"'{url}': '{user}' is not a user name")
    return SshTarget(host, user, port)


@dataclass
class SshOptions:
    identity: Path | None = None
    known_hosts: Path | None = None
    python: str = "python3"
    options: list[str] = field(default_factory=list)  # extra `-o KEY=VALUE`
    timeout: float = 600.0  # seconds without a line of output before the run counts as hung
    connect_timeout: int = 15


def classify(stderr: str, target: SshTarget, started: bool, what: str, rc: int) -> DeviceError:
    text = stderr.strip()
    low = text.lower()
    last = text.splitlines()[-1] if text else f"exit code {rc}"
    if "remote host identification has changed" in low:
        return DeviceError(
            f"{target.host}'s host key changed since it was recorded in known_hosts: if the board "
            f"was reinstalled, remove the old key (ssh-keygen -R {target.host}) and connect once"
        )
    if "host key verification failed" in low or "no ed25519 host key is known" in low or "host key is known for" in low:
        return DeviceError(
            f"{target.host}'s host key is not in known_hosts: connect once with `ssh "
            f"{target.dest}` to check and record it, or pass --known-hosts FILE"
        )
    if "permission denied" in low:
        return DeviceError(
            f"{target.dest} refused our key ({last}): put your public key in the board's "
            "~/.ssh/authorized_keys or pass --identity KEY (passwords are never used)"
        )
    if "could not resolve hostname" in low:
        return DeviceError(f"cannot resolve {target.host}: check the name, or use the board's IP address")
    if "connection refused" in low:
        return DeviceError(
            f"{target.host}:{target.port or 22} refused the connection: is sshd running on the board, on that port?"
        )
    if any(
        s in low for s in ("connection timed out", "no route to host", "network is unreachable", "operation timed out")
    ):
        if started:
            return DeviceGoneError(
                f"{target.host} became unreachable during `{what}` ({last}); results measured "
                "before that are kept and the report is marked incomplete"
            )
        return DeviceError(f"{target.host} is unreachable ({last}): is the board on and on this network?")
    if started and (
        rc == 255 or any(s in low for s in ("connection closed", "broken pipe", "connection reset", "client_loop"))
    ):
        return DeviceGoneError(
            f"the ssh connection to {target.host} dropped during `{what}` ({last}); results "
            "measured before that are kept and the report is marked incomplete"
        )
    return DeviceError(f"`{what}` on {target.dest} failed: {last}")


class Ssh:
    def __init__(self, target: SshTarget, opts: SshOptions):
        for exe in ("ssh", "scp"):
            if not shutil.which(exe):
                raise DeviceError(f"{exe} not found: {INSTALL_HINT}")
        self.target, self.opts = target, opts
        self.started = False

    def _common(self) -> list[str]:
        o = [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.opts.connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]
        if self.opts.identity:
            o += ["-i", str(Path(self.opts.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if self.opts.known_hosts:
            o += [
                "-o",
                f"UserKnownHostsFile={Path(self.opts.known_hosts).expanduser()}",
                "-o",
                "StrictHostKeyChecking=yes",
            ]
        for extra in self.opts.options:
            o += ["-o", extra]
        return o

    def ssh_cmd(self, command: str) -> list[str]:
        """`--` ends ssh's options: the destination and the command are never read as one."""
        port = ["-p", str(self.target.port)] if self.target.port else []
        return ["ssh", *self._common(), *port, "--", self.target.dest, command]

    def scp_cmd(self, local: Path, remote: str) -> list[str]:
        port = ["-P", str(self.target.port)] if self.target.port else []
        return ["scp", "-q", "-r", *self._common(), *port, "--", str(local), f"{self.target.dest}:{remote}"]

    def _call(self, cmd: list[str], what: str, timeout: float | None, check: bool) -> subprocess.CompletedProcess:
        limit = timeout or self.opts.timeout
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=limit, errors="replace", stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"`{what}` on {self.target.host} did not finish within {limit:.0f} s (hung board or "
                "network); allow longer with --timeout"
            ) from None
        if check and done.returncode != 0:
            raise classify(done.stderr, self.target, self.started, what, done.returncode)
        return done

    def run(self, command: str, timeout: float | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self._call(self.ssh_cmd(command), command.split(" && ")[-1][:60], timeout, check)

    def copy(self, local: Path, remote: str) -> None:
        self._call(self.scp_cmd(local, remote), f"scp {local.name}", None, True)

    def stream(self, command: str) -> Iterator[str]:
        """stdout lines of a remote command as they arrive; silence for `timeout` seconds counts as a hang."""
        proc = subprocess.Popen(
            self.ssh_cmd(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
        )
        lines: queue.Queue = queue.Queue()
        err: list[str] = []

        def pump_out() -> None:
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        def pump_err() -> None:
            err.extend(proc.stderr)

        threads = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
        for t in threads:
            t.start()
        try:
            while True:
                try:
                    line = lines.get(timeout=self.opts.timeout)
                except queue.Empty:
                    raise DeviceError(
                        f"the remote runner on {self.target.host} printed nothing for {self.opts.timeout:.0f} s: "
                        "hung (or a very slow board: allow longer with --timeout)"
                    ) from None
                if line is None:
                    break
                yield line.rstrip("\n")
            rc = proc.wait(timeout=30)
            threads[1].join(timeout=5)
            if rc != 0:
                text = "".join(err)
                if (
                    rc == 127
                    or "command not found" in text
                    or ("No such file or directory" in text and self.opts.python in text)
                ):
                    raise DeviceError(
                        f"{self.target.host} has no `{self.opts.python}`: pass --remote-python with "
                        "the board's python (one with executorch and elasticdit installed)"
                    )
                if m := re.search(r"No module named '?([\w.]+)'?", text):
                    raise DeviceError(
                        f"the board's python lacks the module {m.group(1)}: install elasticdit "
                        "(which brings executorch) into it, or pass --remote-python"
                    )
                raise classify(text, self.target, self.started, "remote runner", rc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def measure(
    bundle: Path,
    manifest: Any,
    points: list[Any],
    *,
    target: SshTarget,
    opts: SshOptions,
    runs: int,
    warmup: int,
    threads: int | None,
    with_ops: bool = True,
    memory: bool = True,
    schedules: list[Any] | None = None,
    steps: int = 1,
    guidance: float | None = None,
    resolution: tuple[int, int] | None = None,
) -> Iterator[dict[str, Any]]:
    ssh = Ssh(target, opts)
    remote = ssh.run("mktemp -d /tmp/elasticdit-profile.XXXXXX", timeout=60).stdout.strip()
    if not remote.startswith("/tmp/elasticdit-profile."):
        raise DeviceError(f"unexpected answer from mktemp on {target.host}: {remote!r}")
    ssh.started = True
    try:
        ssh.copy(bundle, f"{remote}/bundle")
        args = [
            f"{remote}/bundle",
            "--runs",
            str(runs),
            "--warmup",
            str(warmup),
            "--ops",
            ",".join(p.name for p in points),
        ]
        if threads:
            args += ["--threads", str(threads)]
        if resolution is not None:  # only when not the default: a board's older elasticdit reads the rest
            args += ["--resolution", f"{resolution[0]}x{resolution[1]}"]
        if not memory:
            args.append("--no-memory")
        if not with_ops:
            args.append("--no-op-breakdown")
        for schedule in schedules or []:  # whole generations on the board (profile/schedule_run.py)
            args += ["--schedule", schedule.spec]
        if schedules:
            args += ["--steps", str(steps)] + (["--guidance", repr(float(guidance))] if guidance is not None else [])
        words = [opts.python, "-m", "elasticdit.profile.remote", *args]
        command = f"cd {shlex.quote(remote)} && " + " ".join(shlex.quote(w) for w in words)
        finished = False
        for line in ssh.stream(command):
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event["event"] == "error":
                raise DeviceError(f"the remote runner on {target.host} failed: {event['message']}")
            if event["event"] == "done":
                finished = True
                continue
            if event["event"] == "device":
                from ..devices_registry import match_model

                profile = match_model(event["device"].get("model") or "")
                event["device"].update(kind="ssh", host=str(target), profile=profile.name if profile else None)
            yield event
        if not finished:
            raise DeviceGoneError(
                f"the remote runner on {target.host} stopped before it finished; results "
                "measured before that are kept and the report is marked incomplete"
            )
    finally:
        with contextlib.suppress(DeviceError):
            ssh.run(f"rm -rf {shlex.quote(remote)}", timeout=60, check=False)
