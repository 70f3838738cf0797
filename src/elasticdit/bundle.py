"""Bundles on disk: the atomic writer and the hashed file list (shared by every target)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import BundleError

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entries(root: Path) -> list[dict[str, Any]]:
    """Every file under root except the manifest (files inside packages such as .mlpackage too), sorted."""
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            entries.append({"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return entries


def dump_json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


class BundleWriter:
    """Build a bundle in a temporary folder beside `dest`, then move it into place in one rename.

    Any exception (or Ctrl-C) inside the `with` block removes the temporary folder and leaves `dest` as it
    was. An existing `dest` is refused unless `force`.
    """

    def __init__(self, dest: str | Path, force: bool = False):
        self.dest = Path(dest).absolute()
        self.force = force
        self.root: Path | None = None

    def __enter__(self) -> BundleWriter:
        if self.dest.exists() and not self.force:
            raise BundleError(f"{self.dest} already exists; pass --force to replace it")
        if self.dest.exists() and not self.dest.is_dir():
            raise BundleError(f"{self.dest} exists and is not a folder")
        parent = self.dest.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.partial-", dir=parent))
        except OSError as exc:
            raise BundleError(f"cannot write a bundle in {parent}: {exc.strerror or exc}") from None
        return self

    def path(self, name: str) -> Path:
        assert self.root is not None, "use BundleWriter as a context manager"
        return self.root / name

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Hash the files, write manifest.json and move the bundle into place; returns the manifest."""
        assert self.root is not None
        manifest = dict(manifest, files=file_entries(self.root))
        (self.root / MANIFEST).write_text(dump_json(manifest))
        for path in [self.root, *self.root.rglob("*")]:
            if path.is_dir():
                os.chmod(path, 0o755)
        old = None
        if self.dest.exists():
            old = self.dest.with_name(f".{self.dest.name}.old-{os.getpid()}")
            os.replace(self.dest, old)
        try:
            os.replace(self.root, self.dest)
        except OSError:
            if old is not None:
                os.replace(old, self.dest)
            raise
        self.root = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return manifest

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
