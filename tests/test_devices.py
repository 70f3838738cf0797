"""Device profiles (devices/*.toml): facts, schema checks, model matching; ssh hosts file; `elasticdit devices`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_profile_support import install_fake_adb
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.devices_registry import (
    DeviceProfileError,
    configured_hosts,
    find_profile,
    load_profile,
    match_adb_model,
    match_model,
    packaged_profiles,
)

runner = CliRunner()
REAL = ("pixel-8-pro", "galaxy-s24-sd8g3", "galaxy-a54", "iphone-15-pro", "iphone-16-pro-max", "raspberry-pi-5")


def test_packaged_profiles_cover_the_required_devices():
    profiles = packaged_profiles()
    assert set(REAL) | {"host"} <= set(profiles)
    for name in REAL:
        p = profiles[name]
        assert all(s.startswith("https://") for s in p.sources), name
        assert p.cores == sum(c.count for c in p.clusters) and 0 < p.recommended_threads <= p.cores
        assert 0 < p.app_memory_mb < p.ram_gb * 1024 and p.app_memory_basis
    pixel, iphone, pi = profiles["pixel-8-pro"], profiles["iphone-15-pro"], profiles["raspberry-pi-5"]
    assert (pixel.soc, pixel.big_cores, pixel.little_cores, pixel.ram_gb) == ("Google Tensor G3", 5, 4, 12.0)
    assert (iphone.backend, iphone.transport, iphone.big_cores, iphone.little_cores) == ("coreml", "ios", 2, 4)
    assert (pi.transport, pi.cores, pi.clusters[0].name) == ("ssh", 4, "Cortex-A76")
    assert profiles["galaxy-s24-sd8g3"].soc.startswith("Qualcomm Snapdragon 8 Gen 3")


def test_host_profile_is_measured_from_this_machine():
    host = find_profile("host")
    assert host.cores == os.cpu_count() and host.recommended_threads == os.cpu_count() and host.ram_gb > 0
    assert host.app_memory_mb == int(host.ram_gb * 1024 * 0.5)


def test_model_matching():
    assert match_adb_model("Pixel_8_Pro").name == "pixel-8-pro"  # as `adb devices -l` prints it
    assert match_adb_model("SM-S921U").name == "galaxy-s24-sd8g3"
    assert match_adb_model("Pixel 8") is None
    assert match_model("Raspberry Pi 5 Model B Rev 1.0").name == "raspberry-pi-5"
    assert match_model("") is None


GOOD = """\
name = "{name}"
display_name = "Test phone"
kind = "android"
transport = "adb"
backend = "executorch-xnnpack"
soc = "Test SoC"
ram_gb = 8
app_memory_mb = 2048
app_memory_basis = "assumption"
recommended_threads = 4
sources = ["https://example.com/spec"]

[cpu]
cores = 8
clusters = [{{ name = "A78", count = 4, tier = "performance" }}, {{ name = "A55", count = 4, tier = "efficiency" }}]
"""


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("ram_gb = 8", "ramgb = 8"), "unknown key 'ramgb'"),
        (lambda t: t.replace("ram_gb = 8", 'ram_gb = "8 GB"'), "'ram_gb' must be int or float, got '8 GB'"),
        (lambda t: t.replace('soc = "Test SoC"\n', ""), "missing required key 'soc'"),
        (lambda t: t.replace("cores = 8", "cores = 9"), "cores = 9 but the clusters add up to 8"),
        (lambda t: t.replace('tier = "efficiency"', 'tier = "little"'), "tier 'little' is not one of"),
        (lambda t: t.replace('kind = "android"', 'kind = "phone"'), "kind 'phone' is not one of"),
        (lambda t: t.replace('sources = ["https://example.com/spec"]', "sources = []"), "'sources' must list"),
        (lambda t: t.replace("recommended_threads = 4", "recommended_threads = 12"), "between 1 and the 8 cores"),
        (lambda t: t.replace('name = "A78", count', 'name = "A78", speed = 2, count'), "unknown key 'speed'"),
        (lambda t: t.replace('name = "phone"', 'name = "other"'), "must match the file name 'phone'"),
    ],
)
def test_schema_errors_name_the_key(tmp_path, edit, message):
    path = tmp_path / "phone.toml"
    path.write_text(edit(GOOD.format(name="phone")))
    with pytest.raises(DeviceProfileError, match=None) as info:
        load_profile(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_good_profile_loads(tmp_path):
    path = tmp_path / "phone.toml"
    path.write_text(GOOD.format(name="phone"))
    p = load_profile(path)
    assert (p.big_cores, p.little_cores, p.app_memory_mb) == (4, 4, 2048)
    assert find_profile(str(path)).name == "phone"
    with pytest.raises(DeviceProfileError, match="no device profile 'nokia-3310'; known: "):
        find_profile("nokia-3310")


def test_hosts_file(tmp_path):
    path = tmp_path / "hosts.toml"
    path.write_text('[hosts.pi5]\nurl = "ssh://pi@pi5.local:2222"\npython = "/opt/venv/bin/python"\n')
    (host,) = configured_hosts(path)
    assert (host.name, host.url, host.python, host.identity) == (
        "pi5",
        "ssh://pi@pi5.local:2222",
        "/opt/venv/bin/python",
        None,
    )
    path.write_text('[hosts.pi5]\nurl = "ssh://pi@pi5.local"\npasword = "x"\n')
    with pytest.raises(DeviceProfileError, match="unknown key 'pasword'"):
        configured_hosts(path)
    path.write_text('[hosts.pi5]\nurl = "pi5.local"\n')
    with pytest.raises(DeviceProfileError, match="url must be ssh://"):
        configured_hosts(path)
    assert configured_hosts(tmp_path / "absent.toml") == []


def test_devices_command_lists_adb_devices_hosts_and_profiles(tmp_path):
    pixel = {
        "serial": "37121FDJH004NX",
        "state": "device",
        "props": {"usb": "1-1", "product": "husky", "model": "Pixel_8_Pro", "device": "husky", "transport_id": "2"},
    }
    other = {"serial": "R5CX1234ABC", "state": "unauthorized", "props": {"usb": "1-2", "transport_id": "3"}}
    env = install_fake_adb(tmp_path / "bin", tmp_path / "state", {"devices": [pixel, other]})
    env["ELASTICDIT_HOSTS"] = str(tmp_path / "none.toml")
    result = runner.invoke(app, ["devices", "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["adb"]["available"] and doc["adb"]["error"] is None
    assert [(d["serial"], d["state"], d.get("model")) for d in doc["adb"]["devices"]] == [
        ("37121FDJH004NX", "device", "Pixel_8_Pro"),
        ("R5CX1234ABC", "unauthorized", None),
    ]
    assert doc["ssh_hosts"] == [] and doc["hosts_file"] == str(tmp_path / "none.toml")
    assert {p["name"] for p in doc["profiles"]} >= set(REAL)
    text = runner.invoke(app, ["devices"], env=env)
    assert text.exit_code == 0 and "adb: 37121FDJH004NX device Pixel_8_Pro" in text.stdout
    assert "pixel-8-pro" in text.stdout and "Tensor G3" in text.stdout


def test_devices_without_adb_says_so(tmp_path):
    result = runner.invoke(
        app,
        ["devices", "--json"],
        env={"PATH": str(tmp_path), "ADB": "", "ELASTICDIT_HOSTS": str(Path(tmp_path) / "none.toml")},
    )
    assert result.exit_code == 0
    adb = json.loads(result.stdout)["adb"]
    assert not adb["available"] and "adb not found" in adb["error"]
