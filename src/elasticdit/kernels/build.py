"""Build elasticdit's native kernels on demand and load them into this process's ExecuTorch runtime.

Why on demand and not in the wheel build: the library must match the installed executorch wheel's headers
and `libexecutorch.so` exactly (its kernel registry is the one the Python runtime uses), and it is compiled
for the CPU it runs on (`-march=native`: AVX-512 here, AVX2 elsewhere); neither is known when a pure-Python
elasticdit wheel is built. So the first use runs CMake (the `cmake` package, >= 3.28, as the wheel's CMake
config needs) on `native/` against the wheel's `share/cmake`, and caches the result under
`$ELASTICDIT_CACHE` (default `~/.cache/elasticdit`)/kernels/<key>, where the key hashes the sources, the
executorch version, the arch flags and the machine: a change of any rebuilds. `ELASTICDIT_KERNELS_LIB` points
at a prebuilt library instead; `ELASTICDIT_ARCH_FLAGS` overrides `-march=native`.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata, resources
from pathlib import Path

from ..cache import cache_root as elasticdit_cache
from ..errors import KernelError

LIBRARY = "libelasticdit_kernels.so"
SSBA_OP = "elasticdit::ssba_attention.out"
_loaded: ctypes.CDLL | None = None


def native_dir() -> Path:
    return Path(str(resources.files("elasticdit") / "kernels" / "native"))


def executorch_root() -> Path:
    import executorch  # a namespace package: no __file__

    for root in map(Path, executorch.__path__):
        if (root / "share" / "cmake" / "executorch-config.cmake").is_file():
            return root
    raise KernelError("the installed executorch package ships no share/cmake/executorch-config.cmake")


def arch_flags() -> str:
    return os.environ.get("ELASTICDIT_ARCH_FLAGS", "-march=native")


def cache_root() -> Path:
    return elasticdit_cache() / "kernels"


def build_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(native_dir().iterdir()):
        if path.suffix in (".cpp", ".h", ".txt"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for part in (metadata.version("executorch"), arch_flags(), platform.machine(), _compiler() or ""):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and (found := shutil.which(name)):
            return found
    return None


def _cmake() -> str:
    try:
        import cmake  # the PyPI package: a CMake new enough for the executorch wheel's config (>= 3.28)

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        found = shutil.which("cmake")
        if found is None:
            raise KernelError("cannot build the SSBA kernel: no cmake (pip install 'cmake>=3.28')") from None
        return found


def library_path() -> Path:
    """The kernel library for this machine, built now if the cache has none."""
    if prebuilt := os.environ.get("ELASTICDIT_KERNELS_LIB"):
        if not Path(prebuilt).is_file():
            raise KernelError(f"ELASTICDIT_KERNELS_LIB names {prebuilt}, which is not a file")
        return Path(prebuilt)
    compiler = _compiler()
    if compiler is None:
        raise KernelError("cannot build the SSBA kernel: no C++ compiler found (install g++ or clang++, or set CXX)")
    target = cache_root() / build_key() / LIBRARY
    if target.is_file():
        return target
    try:
        target.parent.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a waiting process then finds the library
            if not target.is_file():
                _build(compiler, target)
    except OSError as exc:
        raise KernelError(f"cannot build the SSBA kernel in {target.parent.parent}: {exc}") from None
    return target


def _build(compiler: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent.parent) as tmp:
        configure = [
            _cmake(), "-S", str(native_dir()), "-B", tmp, "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_CXX_COMPILER={compiler}", f"-DCMAKE_PREFIX_PATH={executorch_root()}",
            f"-DELASTICDIT_ARCH_FLAGS={arch_flags()}",
        ]  # fmt: skip
        for step in (configure, [_cmake(), "--build", tmp, "--parallel", "2"]):
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                lines = (result.stderr or result.stdout).strip().splitlines()
                detail = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")
                raise KernelError(f"building the SSBA kernel failed: {detail.strip()[:300]}")
        staged = Path(tmp) / "stage"
        staged.mkdir()
        shutil.copy2(Path(tmp) / LIBRARY, staged / LIBRARY)
        os.replace(staged, target.parent)  # atomic: a reader sees no library or a whole one


def load_kernels() -> ctypes.CDLL:
    """Load the kernels into this process once; their static initializers register `elasticdit::` ops with the
    ExecuTorch runtime the Python bindings use."""
    global _loaded
    if _loaded is None:
        from executorch.extension.pybindings import portable_lib  # loads the wheel's libexecutorch.so first

        path = library_path()
        try:
            _loaded = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise KernelError(f"cannot load {path}: {exc}") from None
        if SSBA_OP not in portable_lib._get_operator_names():
            raise KernelError(f"{path} loaded but did not register {SSBA_OP}")
    return _loaded
