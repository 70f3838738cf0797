"""ssh transport end to end against a real OpenSSH server on 127.0.0.1 that this module starts: its own
sshd_config, host key and client key generated in tmp, a free non-standard port, keys only, host key checked
through a known_hosts file. The "board" is this machine, so the remote runner is this venv's python."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.errors import DeviceError
from elasticdit.profile.ssh import Ssh, SshOptions, SshTarget, parse_ssh_url

runner = CliRunner()
SFTP = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "elasticdit-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    exe = shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None
    )
    if exe is None or not shutil.which("ssh-keygen") or not shutil.which("ssh"):
        pytest.skip("OpenSSH server/client not installed (sshd, ssh, ssh-keygen); .ci/run installs openssh-server")
    tmp = tmp_path_factory.mktemp("sshd")
    os.chmod(tmp, 0o700)
    host_key, client_key = _keygen(tmp / "host_key"), _keygen(tmp / "client_key")
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    os.chmod(tmp / "authorized_keys", stat.S_IRUSR | stat.S_IWUSR)
    port = _free_port()
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    sftp = next((p for p in SFTP if os.path.exists(p)), None)
    config = tmp / "sshd_config"
    config.write_text(
        textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {host_key}
        PidFile {tmp}/sshd.pid
        AuthorizedKeysFile {tmp}/authorized_keys
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        LogLevel ERROR
        """)
        + (f"Subsystem sftp {sftp}\n" if sftp else "")
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege-separation directory a root sshd insists on
    check = subprocess.run([exe, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"sshd rejects a minimal config here: {check.stderr.strip()}")
    log = (tmp / "sshd.log").open("w")  # a file, not a pipe nobody drains
    proc = subprocess.Popen([exe, "-D", "-e", "-f", str(config)], stderr=log)
    deadline = time.time() + 15
    while True:
        if proc.poll() is not None:
            pytest.skip(f"sshd cannot start here: {(tmp / 'sshd.log').read_text().strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                pytest.skip("sshd did not accept connections within 15 s")
            time.sleep(0.1)
    known_hosts = tmp / "known_hosts"
    key_type, key_b64 = (tmp / "host_key.pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_b64}\n")
    yield SimpleNamespace(
        port=port, user=user, key=client_key, known_hosts=known_hosts, tmp=tmp, url=f"ssh://{user}@127.0.0.1:{port}"
    )
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def bundle(android_bundle):
    return android_bundle[0]


def ssh_flags(sshd, **override) -> list[str]:
    flags = {"--identity": str(sshd.key), "--known-hosts": str(sshd.known_hosts), "--remote-python": sys.executable}
    flags.update(override)
    return [x for k, v in flags.items() for x in (k, v)]


def leftovers() -> set[str]:
    return set(glob.glob("/tmp/elasticdit-profile.*"))


def test_profile_over_ssh_through_a_configured_host(sshd, bundle, tmp_path):
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(
        textwrap.dedent(f"""\
        [hosts.loopback]
        url = "{sshd.url}"
        identity = "{sshd.key}"
        known_hosts = "{sshd.known_hosts}"
        python = "{sys.executable}"
        """)
    )
    before = leftovers()
    result = runner.invoke(
        app,
        [
            "profile",
            str(bundle),
            "--device",
            "loopback",
            "--ops",
            "r2_d2",
            "--runs",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--no-memory",
            "--json",
        ],
        env={"ELASTICDIT_HOSTS": str(hosts)},
    )
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    dev = report["device"]
    assert dev["kind"] == "ssh" and dev["host"] == sshd.url and dev["threads"] == 1 and dev["cores"] >= 1
    assert report["complete"] and [p["name"] for p in report["operating_points"]] == ["r2_d2"]
    point = report["operating_points"][0]
    assert len(point["denoise_ms"]["all"]) == 2 and point["load_ms"]["first"] > 0
    assert point["peak_memory_mb"] is None and any(o["delegated"] for o in point["ops"])
    assert report["decoder"]["ms"]["n"] == 2 and report["text_encoder"]["ms"]["n"] == 2
    assert leftovers() <= before  # the remote folder was removed


def test_devices_lists_configured_hosts(tmp_path):
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[hosts.pi5]\nurl = "ssh://pi@pi5.local"\nprofile = "raspberry-pi-5"\n')
    result = runner.invoke(app, ["devices", "--json"], env={"ELASTICDIT_HOSTS": str(hosts), "PATH": str(tmp_path)})
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ssh_hosts"] == [
        {"name": "pi5", "url": "ssh://pi@pi5.local", "python": None, "profile": "raspberry-pi-5"}
    ]


@pytest.mark.parametrize("problem", ["wrong key", "unknown host key", "closed port", "no python"])
def test_connection_errors_name_the_fix(sshd, bundle, tmp_path, problem):
    url, flags = sshd.url, ssh_flags(sshd)
    if problem == "wrong key":
        flags = ssh_flags(sshd, **{"--identity": str(_keygen(tmp_path / "stranger"))})
        message = "refused our key"
    elif problem == "unknown host key":
        (tmp_path / "empty_known_hosts").write_text("")
        flags = ssh_flags(sshd, **{"--known-hosts": str(tmp_path / "empty_known_hosts")})
        message = "host key is not in known_hosts"
    elif problem == "closed port":
        url = f"ssh://{sshd.user}@127.0.0.1:{_free_port()}"
        message = "refused the connection: is sshd running on the board"
    else:
        flags = ssh_flags(sshd, **{"--remote-python": "/nonexistent/bin/python3"})
        message = "has no `/nonexistent/bin/python3`: pass --remote-python"
    result = runner.invoke(app, ["profile", str(bundle), "--device", url, "--ops", "r2_d2", *flags])
    assert result.exit_code == 1 and message in result.stderr, result.stderr


def _fake_remote(tmp_path: Path, body: str) -> Path:
    """A stand-in for the board's python: the transport calls it as `PY -m elasticdit.profile.remote ...`."""
    script = tmp_path / "fake_python"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


def test_connection_dropped_mid_run_keeps_results(sshd, bundle, tmp_path):
    script = _fake_remote(
        tmp_path,
        """\
        import json, os, signal, sys, time
        def emit(d):
            print(json.dumps(d), flush=True)
        emit({"event": "device", "device": {"kind": "host", "name": "board", "cores": 4}})
        emit({"event": "point", "name": "r1_d4", "method": "denoise_r1_d4", "kind": "denoise",
              "load_ms": {"first": 3.0, "warm": 2.0}, "ms": [1.5, 1.25], "ops": None, "memory": None})
        time.sleep(0.3)
        pid = os.getppid()  # walk up to this connection's sshd process and kill it: the link drops
        while pid > 1:
            comm = open(f"/proc/{pid}/comm").read().strip()
            if comm.startswith("sshd"):
                os.kill(pid, signal.SIGKILL)
                break
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        time.sleep(5)
        """,
    )
    result = runner.invoke(
        app,
        [
            "profile",
            str(bundle),
            "--device",
            sshd.url,
            "--no-memory",
            "--json",
            *ssh_flags(sshd, **{"--remote-python": str(script)}),
        ],
    )
    assert result.exit_code == 1, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["complete"] is False and report["missing"] == ["r2_d2"]
    assert [p["name"] for p in report["operating_points"]] == ["r1_d4"]
    assert report["operating_points"][0]["denoise_ms"]["median"] == pytest.approx(1.375)
    assert "dropped" in report["error"] or "stopped before it finished" in report["error"]


def test_silent_remote_counts_as_hung(sshd, bundle, tmp_path):
    script = _fake_remote(tmp_path, "import time\ntime.sleep(8)\n")
    t0 = time.time()
    result = runner.invoke(
        app,
        [
            "profile",
            str(bundle),
            "--device",
            sshd.url,
            "--timeout",
            "2",
            *ssh_flags(sshd, **{"--remote-python": str(script)}),
        ],
    )
    assert result.exit_code == 1 and "printed nothing for 2 s" in result.stderr, result.stderr
    assert time.time() - t0 < 25


def test_url_parsing_and_command_lines():
    assert parse_ssh_url("ssh://pi@10.0.0.7:2222") == SshTarget("10.0.0.7", "pi", 2222)
    assert parse_ssh_url("ssh://board") == SshTarget("board")
    assert parse_ssh_url("ssh://root@[::1]:22") == SshTarget("::1", "root", 22)
    for bad in ("ssh://", "ssh://a@b:99999", "ssh://a b"):
        with pytest.raises(DeviceError):
            parse_ssh_url(bad)
    ssh = Ssh(SshTarget("10.0.0.7", "pi", 2222), SshOptions(identity=Path("/k"), known_hosts=Path("/kh")))
    cmd = ssh.ssh_cmd("true")
    assert cmd[0] == "ssh" and cmd[-3:] == ["--", "pi@10.0.0.7", "true"] and cmd[-5:-3] == ["-p", "2222"]
    joined = " ".join(cmd)
    for opt in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/kh", "IdentitiesOnly=yes"):
        assert opt in joined
    scp = ssh.scp_cmd(Path("/b"), "/tmp/x/bundle")
    assert scp[:3] == ["scp", "-q", "-r"] and scp[-5:-3] == ["-P", "2222"] and scp[-3:-1] == ["--", "/b"]
    assert scp[-1] == "pi@10.0.0.7:/tmp/x/bundle"


@pytest.mark.parametrize(
    "url, message",
    [
        ("ssh://-oProxyCommand=touch${IFS}x", "is not a host name or an IP address"),
        ("ssh://-oProxyCommand=touch${IFS}/tmp/x", "is not ssh://"),
        ("ssh://-oProxyCommand=x@board", "is not a user name"),
        ("ssh://board;reboot", "is not a host name"),
        ("ssh://-p2222", "is not a host name"),
        ("ssh://boa$rd", "is not a host name"),
    ],
)
def test_hosts_and_users_that_ssh_would_read_as_options_are_refused(url, message):
    with pytest.raises(DeviceError, match=message):
        parse_ssh_url(url)


def test_an_injected_option_never_runs(tmp_path):
    """Even a target that bypassed the URL check reaches ssh after `--`, so ssh never runs its ProxyCommand; the
    same command line without `--` does run it (the check this test makes can fail)."""
    if not shutil.which("ssh"):
        if os.environ.get("ELASTICDIT_CI"):
            pytest.fail("ssh (openssh-client) is missing in CI")
        pytest.skip("the OpenSSH client is not installed")
    marker = tmp_path / "pwned"
    evil = SshTarget(f"-oProxyCommand=touch {marker}")
    ssh = Ssh(evil, SshOptions(connect_timeout=3, timeout=20))
    with pytest.raises(DeviceError):
        ssh.run("true", timeout=20)
    assert not marker.exists()
    unguarded = [a for a in ssh.ssh_cmd("true") if a != "--"]
    subprocess.run(unguarded, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert marker.exists()


def test_remote_python_is_one_quoted_word(sshd, bundle, tmp_path):
    marker = tmp_path / "pwned"
    flags = ssh_flags(sshd, **{"--remote-python": f"{sys.executable}; touch {marker}"})
    result = runner.invoke(app, ["profile", str(bundle), "--device", sshd.url, "--ops", "r2_d2", *flags])
    assert result.exit_code == 1 and "has no `" in result.stderr, result.stderr
    assert not marker.exists()
