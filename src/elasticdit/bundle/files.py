"""A bundle's files: sha256, the hashed file list written into the manifest, confining every path a manifest
names to the bundle, and checking a folder against the list."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from pathlib import Path
from typing import Any

from ..errors import BundlePathError

MANIFEST = "manifest.json"
FORMAT = "elasticdit-bundle"


def sha256_file(path: Path, sync: bool = False) -> str:
    """sha256 of a file; `sync` also flushes it to the disk (fsync works on a read-only descriptor)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return h.hexdigest()


def file_entries(root: Path, sync: bool = False) -> list[dict[str, Any]]:
    """Every file under root except the manifest (files inside packages such as .mlpackage too), sorted."""
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            entries.append({"path": rel, "sha256": sha256_file(path, sync), "bytes": path.stat().st_size})
    return entries


def dump_json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


def method_entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every method entry of a manifest: the operating points, the decoder(s), the text encoder when present."""
    decoders = doc.get("decoders") if isinstance(doc.get("decoders"), list) else []
    decoder, text_encoder = ([doc[k]] if doc.get(k) else [] for k in ("decoder", "text_encoder"))
    return [*doc["operating_points"], *decoder, *decoders, *text_encoder]


TOKENIZER_FILE_KEYS = ("vocab", "merges", "file")  # the keys of a concat tokenizer's part that name bundle files


def tokenizer_paths(doc: dict[str, Any]) -> list[Any]:
    """Every bundle file the text encoder's tokenizer names (unchecked values: `check_paths` confines them)."""
    te = doc.get("text_encoder")
    tokenizer = te.get("tokenizer") if isinstance(te, dict) else None
    if not isinstance(tokenizer, dict) or tokenizer.get("kind") != "concat":
        return []
    parts = tokenizer.get("parts")
    if not isinstance(parts, list):
        return [None]
    return [p.get(k) if isinstance(p, dict) else None for p in parts for k in TOKENIZER_FILE_KEYS if k in p]


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
    for rel in tokenizer_paths(doc):
        if _confined(bundle, rel, "tokenizer file") not in listed:
            raise BundlePathError(f"the tokenizer reads {rel!r}, which the manifest's hashed file list does not hold")
    pieces = []  # a chunked point's pieces (`chunks`) run files too
    for point in doc["operating_points"]:
        chunks = point.get("chunks", []) if isinstance(point, dict) else []
        if not isinstance(chunks, list) or not all(isinstance(c, dict) for c in chunks):
            raise BundlePathError(f"{bundle}: the chunks of method {point.get('method')!r} are not a list of entries")
        pieces += [{"method": c.get("function"), "file": c.get("file")} for c in chunks]
    for entry in [*method_entries(doc), *pieces]:
        file = _confined(bundle, entry.get("file"), f"method {entry.get('method')!r} file")
        if file not in listed and not any(p.startswith(file + "/") for p in listed):
            raise BundlePathError(
                f"method {entry.get('method')!r} runs {file!r}, which the manifest's hashed file list does not hold"
            )
        if entry.get("data_file") is not None:
            data = _confined(bundle, entry["data_file"], f"method {entry.get('method')!r} data file")
            if data not in listed:
                raise BundlePathError(
                    f"method {entry.get('method')!r} loads weights from {data!r}, which the manifest's hashed file "
                    "list does not hold"
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
