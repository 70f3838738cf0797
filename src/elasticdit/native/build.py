"""Build `elasticdit-run` (the C++ app-side runtime in `runtime/`) on demand, cached per sources and toolchain.

Targets: `host` (this machine's compiler against the installed executorch wheel) and `linux-aarch64` (Debian's
`aarch64-linux-gnu-g++` against the aarch64 build of the same executorch release, downloaded once from PyPI
with pip and unpacked into the cache). The build lives in `<cache>/native/<target>-<key>/` where the key hashes
the C++ sources, the compiler's and cmake's version lines, the target and the executorch libraries it links, so
a change to any of them builds afresh and nothing else does. A build goes to a temporary folder first and is
renamed into place, under a file lock (several processes may ask at once). The documented by-hand equivalent
is the `cmake` line in docs/runtime.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_root
from .errors import NativeBuildError

BINARY = "elasticdit-run"
MIN_CMAKE = (3, 28)
TARGETS = ("host", "linux-aarch64")
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")
AARCH64_PLATFORM = "manylinux_2_28_aarch64"


@dataclass(frozen=True)
class Built:
    binary: Path
    target: str
    key: str
    seconds: float  # 0.0 when it came from the cache
    cached: bool


def source_dir() -> Path:
    """The C++ project: shipped in the package as native/cpp (a link to the repository's runtime/)."""
    for candidate in (Path(__file__).parent / "cpp", Path(__file__).resolve().parents[3] / "runtime"):
        if (candidate / "CMakeLists.txt").is_file():
            return candidate
    raise NativeBuildError("the C++ runtime sources are missing from this installation (runtime/CMakeLists.txt)")


def _source_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else ""


def find_cmake() -> Path:
    """A cmake >= 3.28: the PyPI `cmake` package's first (a project dependency), then PATH."""
    candidates = []
    if importlib.util.find_spec("cmake") is not None:
        import cmake

        candidates.append(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    if found := shutil.which("cmake"):
        candidates.append(Path(found))
    seen = []
    for path in candidates:
        line = _first_line([str(path), "--version"])
        if m := re.search(r"version (\d+)\.(\d+)", line):
            version = (int(m.group(1)), int(m.group(2)))
            if version >= MIN_CMAKE:
                return path
            seen.append(f"{path} is {m.group(1)}.{m.group(2)}")
    found_text = f" ({'; '.join(seen)})" if seen else ""
    raise NativeBuildError(
        f"building elasticdit-run needs cmake >= {MIN_CMAKE[0]}.{MIN_CMAKE[1]}{found_text}: pip install cmake"
    )


def find_compiler(target: str) -> Path:
    if target == "host":
        for name in filter(None, (os.environ.get("CXX"), "c++", "g++", "clang++")):
            if found := shutil.which(name):
                return Path(found)
        raise NativeBuildError("building elasticdit-run needs a C++17 compiler: apt install g++ (or set $CXX)")
    found = shutil.which("aarch64-linux-gnu-g++")
    if not found:
        raise NativeBuildError(
            "cross-building elasticdit-run for aarch64 needs aarch64-linux-gnu-g++: apt install g++-aarch64-linux-gnu"
        )
    return Path(found)


def executorch_root() -> Path:
    """The installed executorch wheel's package folder (include/, lib/, share/cmake/)."""
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise NativeBuildError("the executorch package is not installed (pip install executorch)")
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "share" / "cmake" / "executorch-config.cmake").is_file():
        raise NativeBuildError(f"{root} has no share/cmake/executorch-config.cmake: reinstall executorch from PyPI")
    return root


def aarch64_executorch(version: str | None = None) -> Path:
    """The aarch64 executorch wheel of this host's release, unpacked (include/, lib/, share/) into the cache."""
    version = version or importlib.metadata.version("executorch")
    dest = cache_root() / "native" / f"executorch-{version}-{AARCH64_PLATFORM}"
    pkg = dest / "executorch"
    if (pkg / "share" / "cmake" / "executorch-config.cmake").is_file():
        return pkg
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent / f".lock-{dest.name}"):
        if (pkg / "share" / "cmake" / "executorch-config.cmake").is_file():
            return pkg
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", f"executorch=={version}", "--no-deps", "-d", tmp,
                   "--only-binary=:all:", "--platform", AARCH64_PLATFORM, "--python-version", "3.11"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("executorch-*.whl"))
            if done.returncode != 0 or not wheels:
                last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
                raise NativeBuildError(f"cannot download the aarch64 executorch {version} wheel with pip: {last}")
            unpacked = Path(tmp) / "unpacked"
            with zipfile.ZipFile(wheels[0]) as z:
                names = [n for n in z.namelist() if n.split("/")[:1] == ["executorch"] and len(n.split("/")) > 2]
                z.extractall(unpacked, [n for n in names if n.split("/")[1] in ("include", "lib", "share")])
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(unpacked, dest)
    return pkg


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _key(target: str, src: Path, compiler: Path, cmake: Path, et_root: Path) -> str:
    h = hashlib.sha256()
    for path in _source_files(src):
        h.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(target.encode() + b"\0")
    h.update(_first_line([str(compiler), "--version"]).encode() + b"\0")
    h.update(_first_line([str(cmake), "--version"]).encode() + b"\0")
    h.update(str(et_root).encode() + b"\0")
    for lib in sorted((et_root / "lib").glob("*.so")):
        h.update(f"{lib.name}:{lib.stat().st_size}".encode() + b"\0")
    return h.hexdigest()[:16]


def build(target: str = "host", *, force: bool = False, log=None) -> Built:
    """The elasticdit-run binary for `target`, built if the cache has none for these sources and tools."""
    if target not in TARGETS:
        raise NativeBuildError(f"unknown native target '{target}'; known: {', '.join(TARGETS)}")
    src = source_dir()
    cmake = find_cmake()
    compiler = find_compiler(target)
    et_root = executorch_root() if target == "host" else aarch64_executorch()
    key = _key(target, src, compiler, cmake, et_root)
    out = cache_root() / "native" / f"{target}-{key}"
    binary = out / BINARY
    if binary.is_file() and not force:
        return Built(binary, target, key, 0.0, True)
    with _locked(out.parent / f".lock-{target}-{key}"):
        if binary.is_file() and not force:
            return Built(binary, target, key, 0.0, True)
        start = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=f".{target}-{key}-", dir=out.parent))
        work.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary user folder
        try:
            _configure_and_build(target, src, cmake, compiler, et_root, work, log)
            shutil.copy2(work / "build" / BINARY, work / BINARY)
            seconds = time.perf_counter() - start
            info = {"target": target, "key": key, "compiler": _first_line([str(compiler), "--version"]),
                    "cmake": _first_line([str(cmake), "--version"]), "executorch": str(et_root),
                    "seconds": round(seconds, 1)}  # fmt: skip
            (work / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
            if out.exists():
                shutil.rmtree(out)
            os.replace(work, out)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return Built(binary, target, key, seconds, False)


def _configure_and_build(target, src, cmake, compiler, et_root, work: Path, log) -> None:
    build_dir = work / "build"
    args = [str(cmake), "-S", str(src), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
            f"-Dexecutorch_DIR={et_root / 'share' / 'cmake'}"]  # fmt: skip
    if shutil.which("ninja"):
        args += ["-G", "Ninja"]
    if target == "host":
        args.append(f"-DCMAKE_CXX_COMPILER={compiler}")
    else:
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={src / 'cmake' / 'aarch64-linux-gnu.cmake'}")
    for step, cmd in (("configure", args), ("build", [str(cmake), "--build", str(build_dir), "--target", BINARY])):
        if log:
            log(f"{step}: {' '.join(cmd)}")
        done = subprocess.run(cmd, capture_output=True, text=True)
        (work / f"{step}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            kept = work.parent / f"{target}-failed-{step}.log"
            shutil.copyfile(work / f"{step}.log", kept)
            raise NativeBuildError(
                f"cmake {step} of elasticdit-run ({target}) failed: {_reason(done.stdout + done.stderr)} (log: {kept})"
            )


def _reason(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("CMake Error") and i + 1 < len(lines):
            return lines[i + 1]
        if re.search(r"error:", line):
            return line
    return lines[-1] if lines else "no output"
