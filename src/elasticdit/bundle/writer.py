"""Writing a bundle: into a temporary folder beside its destination, every file and folder fsync'ed, then swapped
into place in one atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`, macOS `renamex_np(RENAME_SWAP)`), so the
destination is never missing or half-written. `--force` replaces only an empty folder or an elasticdit bundle that
holds nothing its manifest does not list: a user's folder is never deleted.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import BundleError
from .files import FORMAT, MANIFEST, dump_json, file_entries

SHOWN = 5  # foreign files named in an error before "and N more"


def _sync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def foreign_entries(folder: Path) -> list[str] | None:
    """What in `folder` is not part of the elasticdit bundle there: None when there is no manifest of ours,
    else the files (and empty folders, symbolic links) its manifest does not list, sorted."""
    try:
        doc = json.loads((folder / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), list):
        return None
    listed = {e.get("path") for e in doc["files"] if isinstance(e, dict)} | {MANIFEST}
    listed_dirs = {p.rsplit("/", i)[0] for p in listed if isinstance(p, str) for i in range(1, p.count("/") + 1)}
    foreign = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        rel_top = Path(top).relative_to(folder).as_posix()
        prefix = "" if rel_top == "." else rel_top + "/"
        for name in dirs:
            if os.path.islink(os.path.join(top, name)):
                foreign.append(prefix + name)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
        for name in files:
            path = os.path.join(top, name)
            if prefix + name not in listed or os.path.islink(path):
                foreign.append(prefix + name)
        if not dirs and not files and prefix and rel_top not in listed_dirs:
            foreign.append(prefix)
    return sorted(foreign)


def check_replaceable(dest: Path) -> None:
    """`--force` may replace dest only when it is an empty folder or an elasticdit bundle and nothing else."""
    if dest.is_symlink():
        raise BundleError(f"{dest} is a symbolic link; pass the folder itself as the bundle to replace")
    if not dest.is_dir():
        raise BundleError(f"{dest} exists and is not a folder; --force replaces only an elasticdit bundle")
    if not any(dest.iterdir()):
        return
    foreign = foreign_entries(dest)
    if foreign is None:
        raise BundleError(
            f"{dest} is not an elasticdit bundle (no {MANIFEST} of ours); --force replaces only an empty folder or a "
            "bundle: choose another -o"
        )
    if foreign:
        more = f" and {len(foreign) - SHOWN} more" if len(foreign) > SHOWN else ""
        raise BundleError(
            f"{dest} holds files its manifest does not list ({', '.join(foreign[:SHOWN])}{more}); --force replaces "
            "only a bundle: move them or choose another -o"
        )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step; False when this OS or file system cannot (the caller falls back)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
            at_fdcwd, rename_exchange = -100, 2
            done = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
        elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
            rename_swap = 2
            done = libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap)
        else:
            return False
    except OSError:
        return False
    if done == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system has no exchange
        return False
    raise OSError(errno, os.strerror(errno), str(b))


class BundleWriter:
    """Build a bundle in a temporary folder beside `dest`, then swap it into place atomically.

    Any exception (or Ctrl-C) inside the `with` block removes the temporary folder and leaves `dest` as it
    was; an OSError (disk full, permissions) becomes a one-line `BundleError`. An existing `dest` is refused
    unless `force`, and even then unless it is an empty folder or an elasticdit bundle (`check_replaceable`).
    """

    def __init__(self, dest: str | Path, force: bool = False):
        self.dest = Path(dest).absolute()
        self.force = force
        self.root: Path | None = None

    def __enter__(self) -> BundleWriter:
        if os.path.lexists(self.dest):
            if not self.force:
                raise BundleError(f"{self.dest} already exists; pass --force to replace it")
            check_replaceable(self.dest)
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
        """Hash and fsync the files, write manifest.json and swap the bundle into place; returns the manifest."""
        assert self.root is not None
        root = self.root
        manifest = dict(manifest, files=file_entries(root, sync=True))
        with (root / MANIFEST).open("w") as f:
            f.write(dump_json(manifest))
            f.flush()
            os.fsync(f.fileno())
        folders = [p for p in root.rglob("*") if p.is_dir()]
        for path in [root, *folders]:
            os.chmod(path, 0o755)
        for path in [*sorted(folders, reverse=True), root]:  # deepest first: each folder's entries are durable
            _sync_folder(path)
        self._swap_into_place()
        return manifest

    def _swap_into_place(self) -> None:
        assert self.root is not None
        if os.path.lexists(self.dest):
            check_replaceable(self.dest)  # again: the folder may have changed while the export ran
            if _exchange(self.root, self.dest):
                old = self.root  # the exchange left the previous bundle at the temporary name
            else:  # no atomic exchange here: two renames, with a moment in between where dest is missing
                old = self.dest.with_name(f".{self.dest.name}.old-{os.getpid()}")
                os.replace(self.dest, old)
                try:
                    os.replace(self.root, self.dest)
                except OSError:
                    os.replace(old, self.dest)
                    raise
        else:
            os.replace(self.root, self.dest)
            old = None
        self.root = None
        _sync_folder(self.dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            raise BundleError(
                f"writing the bundle {self.dest} failed: {exc.strerror or exc}{where}; {self.dest} was left as it was"
            ) from exc
