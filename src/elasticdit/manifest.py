"""manifest.json (version 1): everything an app, `verify` and `profile` need to run a bundle."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bundle import MANIFEST, sha256_file
from .errors import BundleError

FORMAT = "elasticdit-bundle"
VERSION = 1
TARGETS = ("android", "ios", "onnx")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[int]
    dtype: str = "float32"


@dataclass
class MethodEntry:
    method: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass
class PointEntry(MethodEntry):
    name: str = ""
    compression_ratio: int = 1
    depth: str = ""
    blocks: list[int] = field(default_factory=list)
    tokens: int = 0
    gflops: float = 0.0
    ssba_sparsity: float = 0.0  # joint-sequence sparsity averaged over the layers (DESIGN's definition)
    ssba_image_sparsity: float = 0.0


def build_manifest(
    *,
    target: str,
    checkpoint_sha256: str,
    recipe: dict[str, Any],
    resolution: tuple[int, int],
    scheduler: dict[str, Any],
    points: list[PointEntry],
    decoder: MethodEntry | None,
    text_encoder: MethodEntry | None,
    latent: dict[str, Any],
    tokenizer: dict[str, Any] | None,
    default_point: str,
    cfg_batch: bool,
    tool_version: str,
) -> dict[str, Any]:
    """The manifest without `files` (the bundle writer adds them once every file is written)."""

    def ordered_point(p: PointEntry) -> dict[str, Any]:
        d = asdict(p)
        keys = [
            "name",
            "compression_ratio",
            "depth",
            "blocks",
            "method",
            "file",
            "tokens",
            "gflops",
            "ssba_sparsity",
            "ssba_image_sparsity",
            "inputs",
            "outputs",
        ]
        return {k: d[k] for k in keys}

    return {
        "format": FORMAT,
        "version": VERSION,
        "target": target,
        "tool": {"name": "elasticdit", "version": tool_version},
        "checkpoint_sha256": checkpoint_sha256,
        "recipe": recipe,
        "resolution": list(resolution),
        "scheduler": scheduler,
        "latent": latent,
        "cfg_batch": cfg_batch,
        "default_operating_point": default_point,
        "operating_points": [ordered_point(p) for p in points],
        "decoder": asdict(decoder) if decoder else None,
        "text_encoder": dict(asdict(text_encoder), tokenizer=tokenizer) if text_encoder else None,
    }


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """Parse and structurally check a bundle's manifest (named errors, no partial trust)."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle} is not a bundle folder")
    if not path.is_file():
        raise BundleError(f"{bundle} has no {MANIFEST}")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"{path} is not an {FORMAT} manifest")
    if doc.get("version") != VERSION:
        raise BundleError(f"{path} has manifest version {doc.get('version')!r}; this tool reads {VERSION}")
    if doc.get("target") not in TARGETS:
        raise BundleError(f"{path} names an unknown target {doc.get('target')!r}")
    for key in ("operating_points", "files", "resolution", "scheduler", "recipe", "checkpoint_sha256"):
        if key not in doc:
            raise BundleError(f"{path} lacks '{key}'")
    for point in doc["operating_points"]:
        for key in ("name", "method", "file", "inputs", "outputs"):
            if key not in point:
                raise BundleError(f"{path}: an operating point lacks '{key}'")
    return doc


def check_files(bundle: str | Path, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare every listed file's size and sha256; returns one row per file (`ok`, `problem`)."""
    bundle = Path(bundle)
    rows = []
    for entry in doc["files"]:
        path = bundle / entry["path"]
        row = {"path": entry["path"], "ok": True, "problem": ""}
        if not path.is_file():
            row.update(ok=False, problem="missing")
        elif path.stat().st_size != entry["bytes"]:
            row.update(ok=False, problem=f"size {path.stat().st_size} != {entry['bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            row.update(ok=False, problem="sha256 differs (tampered or corrupted)")
        rows.append(row)
    listed = {e["path"] for e in doc["files"]} | {MANIFEST}
    for extra in sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()):
        if extra not in listed:
            rows.append({"path": extra, "ok": False, "problem": "not listed in the manifest"})
    return rows
