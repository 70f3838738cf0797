"""Reading a bundle: the manifest's structure, its target, and every file's hash, in one call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..targets import TARGETS, Target, get_target
from .files import MANIFEST, check_files, check_paths
from .manifest import Manifest, check_structure


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    target: Target

    def check_files(self) -> list[dict[str, Any]]:
        """Every listed file's size and sha256 must match and no unlisted file be present; returns the rows
        (path, ok, problem), or raises a `BundleError` naming the first problem."""
        rows = check_files(self.path, {**self.manifest.to_dict(), "files": self.manifest.files})
        bad = [f for f in rows if not f["ok"]]
        if bad:
            raise BundleError(
                f"{self.path}: {bad[0]['path']}: {bad[0]['problem']}"
                + (f" (and {len(bad) - 1} more files)" if len(bad) > 1 else "")
            )
        return rows


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """Parse and structurally check a bundle's manifest (named errors, no partial trust), including `check_paths`:
    nothing that reads a bundle ever touches a path outside it. The document as written."""
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
    check_structure(doc, str(path), TARGETS)
    check_paths(bundle, doc)
    return doc


def read_bundle(bundle: str | Path, check: bool = True) -> Bundle:
    """The typed manifest and its target; with `check`, every file checked too (`Bundle.check_files`)."""
    bundle = Path(bundle)
    manifest = Manifest.from_dict(read_manifest(bundle), str(bundle / MANIFEST), TARGETS)
    opened = Bundle(bundle, manifest, get_target(manifest.target))
    if check:
        opened.check_files()
    return opened
