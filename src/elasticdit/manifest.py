"""manifest.json (version 1): everything an app, `verify` and `profile` need to run a bundle."""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bundle import FORMAT, MANIFEST, sha256_file
from .errors import BundleError, BundlePathError

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
    """Parse and structurally check a bundle's manifest (named errors, no partial trust), including
    `check_paths`: nothing that reads a bundle ever touches a path outside it."""
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
    check_paths(bundle, doc)
    return doc


def method_entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every method entry of a manifest: the operating points, then decoder and text encoder when present."""
    return [*doc["operating_points"], *(doc[k] for k in ("decoder", "text_encoder") if doc.get(k))]


def _confined(bundle: Path, rel: Any, what: str) -> str:
    """`rel` as a path inside the bundle: relative, normalized, no '..', resolving (symbolic links followed)
    to a place inside the bundle folder; otherwise a `BundlePathError` naming it."""
    if not isinstance(rel, str) or not rel:
        raise BundlePathError(f"{what} {rel!r} is not a file name")
    if rel.startswith("/") or "\\" in rel or "\0" in rel or posixpath.isabs(rel):
        raise BundlePathError(f"{what} {rel!r} is an absolute path; a bundle names only files inside itself")
    if posixpath.normpath(rel) != rel or rel in (".", "..") or ".." in rel.split("/"):
        raise BundlePathError(f"{what} {rel!r} is not a normalized path inside the bundle")
    root = bundle.resolve()
    if not (bundle / rel).resolve().is_relative_to(root):
        raise BundlePathError(f"{what} {rel!r} leads outside the bundle (a symbolic link)")
    return rel


def check_paths(bundle: str | Path, doc: dict[str, Any]) -> None:
    """Every listed file is a confined path (`_confined`), and every method's file is one of them (or a package
    folder holding listed files): run before any file of the bundle is read, pushed or executed."""
    bundle = Path(bundle)
    files = doc.get("files")
    if not isinstance(files, list) or not all(isinstance(e, dict) for e in files):
        raise BundlePathError(f"{bundle}: the manifest's 'files' is not a list of entries")
    listed = set()
    for entry in files:
        listed.add(_confined(bundle, entry.get("path"), "listed file"))
        if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
            raise BundlePathError(f"{bundle}: the entry of {entry['path']} lacks its sha256 or size")
    for entry in method_entries(doc):
        file = _confined(bundle, entry.get("file"), f"method {entry.get('method')!r} file")
        if file not in listed and not any(p.startswith(file + "/") for p in listed):
            raise BundlePathError(
                f"method {entry.get('method')!r} runs {file!r}, which the manifest's hashed file list does not hold"
            )


def check_files(bundle: str | Path, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare every listed file's size and sha256; returns one row per file (`ok`, `problem`). Files the manifest
    does not list and symbolic links are rows with a problem too (links are never followed)."""
    bundle = Path(bundle)
    check_paths(bundle, doc)
    rows = []
    for entry in doc["files"]:
        path = bundle / entry["path"]
        row = {"path": entry["path"], "ok": True, "problem": ""}
        if path.is_symlink():
            row.update(ok=False, problem="a symbolic link")
        elif not path.is_file():
            row.update(ok=False, problem="missing")
        elif path.stat().st_size != entry["bytes"]:
            row.update(ok=False, problem=f"size {path.stat().st_size} != {entry['bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            row.update(ok=False, problem="sha256 differs (tampered or corrupted)")
        rows.append(row)
    listed = {e["path"] for e in doc["files"]} | {MANIFEST}
    found = []
    for top, dirs, names in os.walk(bundle, followlinks=False):
        rel_top = Path(top).relative_to(bundle)
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        found += [(rel_top / name).as_posix() for name in [*names, *links]]
    for extra in sorted(set(found) - listed):
        rows.append({"path": extra, "ok": False, "problem": "not listed in the manifest"})
    return rows
