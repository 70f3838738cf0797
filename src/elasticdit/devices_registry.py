"""Device profiles (`devices/*.toml`) and the ssh hosts a user configured.

A profile states the hardware facts of one device (SoC, CPU clusters, RAM), how to reach it, the backend the
bundle runs on there, the recommended thread count and the memory an app may use; every hardware fact has a
source URL. Every key is checked on load: an unknown key, a wrong type or a missing required key is a
`DeviceProfileError` naming the file and the key. `host` is measured from this machine when loaded.

ssh hosts live in `$ELASTICDIT_HOSTS`, else `$XDG_CONFIG_HOME/elasticdit/hosts.toml`, else
`~/.config/elasticdit/hosts.toml`:

    [hosts.pi5]
    url = "ssh://pi@pi5.local"            # ssh://[USER@]HOST[:PORT]
    identity = "~/.ssh/id_ed25519"        # optional
    known_hosts = "~/.ssh/known_hosts"    # optional
    python = "/home/pi/venv/bin/python"   # optional (default python3)
    profile = "raspberry-pi-5"            # optional: the device profile it is
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import DeviceProfileError

KINDS = ("android", "ios", "linux", "host")
TRANSPORTS = ("adb", "ios", "ssh", "host")
BACKENDS = ("executorch-xnnpack", "coreml", "onnxruntime")
TIERS = ("prime", "performance", "efficiency")

# key -> (type, required unless `detect`)
TOP: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "name": (str, True),
    "display_name": (str, True),
    "kind": (str, True),
    "transport": (str, True),
    "backend": (str, True),
    "soc": (str, False),
    "ram_gb": ((int, float), False),
    "app_memory_mb": (int, False),
    "app_memory_basis": (str, False),
    "app_memory_fraction": ((int, float), False),
    "recommended_threads": (int, False),
    "models": (list, False),
    "detect": (bool, False),
    "notes": (str, False),
    "sources": (list, True),
    "cpu": (dict, False),
}
REQUIRED_UNLESS_DETECT = ("soc", "ram_gb", "app_memory_mb", "app_memory_basis", "recommended_threads", "cpu")
CLUSTER = {"name": (str, True), "count": (int, True), "max_ghz": ((int, float), False), "tier": (str, True)}


@dataclass(frozen=True)
class Cluster:
    name: str
    count: int
    tier: str
    max_ghz: float | None = None


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    display_name: str
    kind: str
    transport: str
    backend: str
    soc: str
    ram_gb: float
    app_memory_mb: int
    app_memory_basis: str
    recommended_threads: int
    cores: int
    clusters: tuple[Cluster, ...]
    models: tuple[str, ...] = ()
    notes: str = ""
    sources: tuple[str, ...] = ()
    path: str = ""

    @property
    def big_cores(self) -> int:
        return sum(c.count for c in self.clusters if c.tier in ("prime", "performance"))

    @property
    def little_cores(self) -> int:
        return sum(c.count for c in self.clusters if c.tier == "efficiency")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "kind": self.kind,
            "transport": self.transport,
            "backend": self.backend,
            "soc": self.soc,
            "cores": self.cores,
            "big_cores": self.big_cores,
            "little_cores": self.little_cores,
            "clusters": [
                {"name": c.name, "count": c.count, "tier": c.tier, "max_ghz": c.max_ghz} for c in self.clusters
            ],
            "ram_gb": self.ram_gb,
            "app_memory_mb": self.app_memory_mb,
            "app_memory_basis": self.app_memory_basis,
            "recommended_threads": self.recommended_threads,
            "models": list(self.models),
            "notes": self.notes,
            "sources": list(self.sources),
            "path": self.path,
        }


def _check(where: str, table: dict[str, Any], schema: dict[str, tuple[Any, bool]], required: bool = True) -> None:
    for key, value in table.items():
        if key not in schema:
            raise DeviceProfileError(f"{where}: unknown key '{key}' (known: {', '.join(schema)})")
        typ = schema[key][0]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
            raise DeviceProfileError(f"{where}: '{key}' must be {names}, got {value!r}")
    if required:
        for key, (_, needed) in schema.items():
            if needed and key not in table:
                raise DeviceProfileError(f"{where}: missing required key '{key}'")


def _detect_host() -> dict[str, Any]:
    from .hostinfo import host_info

    info = host_info()
    cores = info["cores"] or 1
    return {
        "soc": info["cpu"],
        "ram_gb": round((info["ram_mb"] or 0) / 1024, 1),
        "cpu": {"cores": cores, "clusters": [{"name": info["cpu"], "count": cores, "tier": "performance"}]},
        "recommended_threads": cores,
    }


def parse_profile(raw: dict[str, Any], where: str) -> DeviceProfile:
    _check(where, raw, TOP)
    for key, allowed in (("kind", KINDS), ("transport", TRANSPORTS), ("backend", BACKENDS)):
        if raw[key] not in allowed:
            raise DeviceProfileError(f"{where}: {key} '{raw[key]}' is not one of {', '.join(allowed)}")
    if not raw["sources"] or not all(isinstance(s, str) and s for s in raw["sources"]):
        raise DeviceProfileError(f"{where}: 'sources' must list where the hardware facts come from")
    if raw.get("detect"):
        detected = _detect_host()
        fraction = float(raw.get("app_memory_fraction", 0.5))
        raw = {**detected, **{k: v for k, v in raw.items() if k != "cpu"}}
        raw.setdefault("app_memory_mb", int(raw["ram_gb"] * 1024 * fraction))
        raw.setdefault("app_memory_basis", f"{fraction:.0%} of this machine's RAM")
    else:
        for key in REQUIRED_UNLESS_DETECT:
            if key not in raw:
                raise DeviceProfileError(f"{where}: missing required key '{key}'")
    cpu = raw["cpu"]
    _check(f"{where} [cpu]", cpu, {"cores": (int, True), "clusters": (list, True)})
    clusters = []
    for i, c in enumerate(cpu["clusters"]):
        if not isinstance(c, dict):
            raise DeviceProfileError(f"{where} [cpu] clusters[{i}] must be a table")
        _check(f"{where} [cpu] clusters[{i}]", c, CLUSTER)
        if c["tier"] not in TIERS:
            raise DeviceProfileError(
                f"{where} [cpu] clusters[{i}]: tier '{c['tier']}' is not one of {', '.join(TIERS)}"
            )
        clusters.append(Cluster(c["name"], c["count"], c["tier"], c.get("max_ghz")))
    if sum(c.count for c in clusters) != cpu["cores"]:
        raise DeviceProfileError(
            f"{where} [cpu]: cores = {cpu['cores']} but the clusters add up to {sum(c.count for c in clusters)}"
        )
    if not 0 < raw["recommended_threads"] <= cpu["cores"]:
        raise DeviceProfileError(f"{where}: recommended_threads must be between 1 and the {cpu['cores']} cores")
    if raw["app_memory_mb"] <= 0 or raw["app_memory_mb"] > raw["ram_gb"] * 1024:
        raise DeviceProfileError(f"{where}: app_memory_mb must be positive and within ram_gb")
    return DeviceProfile(
        name=raw["name"],
        display_name=raw["display_name"],
        kind=raw["kind"],
        transport=raw["transport"],
        backend=raw["backend"],
        soc=raw["soc"],
        ram_gb=float(raw["ram_gb"]),
        app_memory_mb=raw["app_memory_mb"],
        app_memory_basis=raw["app_memory_basis"],
        recommended_threads=raw["recommended_threads"],
        cores=cpu["cores"],
        clusters=tuple(clusters),
        models=tuple(raw.get("models", ())),
        notes=raw.get("notes", ""),
        sources=tuple(raw["sources"]),
        path=where,
    )


def load_profile(path: str | Path) -> DeviceProfile:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DeviceProfileError(f"cannot read device profile {path}: {exc}") from None
    profile = parse_profile(raw, str(path))
    if profile.name != path.stem:
        raise DeviceProfileError(f"{path}: name '{profile.name}' must match the file name '{path.stem}'")
    return profile


def profiles_dir() -> Path:
    return Path(str(resources.files("elasticdit") / "devices"))


def packaged_profiles() -> dict[str, DeviceProfile]:
    return {p.stem: load_profile(p) for p in sorted(profiles_dir().glob("*.toml"))}


def find_profile(name_or_path: str) -> DeviceProfile:
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_profile(name_or_path)
    profiles = packaged_profiles()
    if name_or_path not in profiles:
        raise DeviceProfileError(f"no device profile '{name_or_path}'; known: {', '.join(profiles)}")
    return profiles[name_or_path]


def _norm(s: str) -> str:
    return re.sub(r"[\s_]+", " ", s).strip().lower()


def match_adb_model(model: str) -> DeviceProfile | None:
    """The profile whose `models` lists this ro.product.model exactly (adb prints spaces as '_')."""
    want = _norm(model)
    return next((p for p in packaged_profiles().values() if any(_norm(m) == want for m in p.models)), None)


def match_model(model: str) -> DeviceProfile | None:
    """Exact model match, else a profile model that starts the board's device-tree model."""
    if not model:
        return None
    exact = match_adb_model(model)
    if exact:
        return exact
    want = _norm(model)
    return next((p for p in packaged_profiles().values() if any(want.startswith(_norm(m)) for m in p.models)), None)


# --- ssh hosts -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshHost:
    name: str
    url: str
    identity: str | None = None
    known_hosts: str | None = None
    python: str | None = None
    profile: str | None = None
    source: str = field(default="", compare=False)


HOST_KEYS = {
    "url": (str, True),
    "identity": (str, False),
    "known_hosts": (str, False),
    "python": (str, False),
    "profile": (str, False),
}


def hosts_file() -> Path:
    if os.environ.get("ELASTICDIT_HOSTS"):
        return Path(os.environ["ELASTICDIT_HOSTS"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "elasticdit" / "hosts.toml"


def configured_hosts(path: Path | None = None) -> list[SshHost]:
    path = path or hosts_file()
    if not path.is_file():
        return []
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DeviceProfileError(f"cannot read ssh hosts {path}: {exc}") from None
    unknown = set(raw) - {"hosts"}
    if unknown:
        raise DeviceProfileError(f"{path}: unknown key '{sorted(unknown)[0]}' (put hosts under [hosts.NAME])")
    hosts = []
    for name, table in (raw.get("hosts") or {}).items():
        if not isinstance(table, dict):
            raise DeviceProfileError(f"{path}: hosts.{name} must be a table")
        _check(f"{path} [hosts.{name}]", table, HOST_KEYS)
        if not table["url"].startswith("ssh://"):
            raise DeviceProfileError(f"{path} [hosts.{name}]: url must be ssh://[USER@]HOST[:PORT]")
        hosts.append(SshHost(name, **table, source=str(path)))
    return hosts
