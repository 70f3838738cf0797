"""Where elasticdit caches what it builds on first use (the SSBA kernel, the native runtime)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$ELASTICDIT_CACHE, else $XDG_CACHE_HOME/elasticdit, else ~/.cache/elasticdit."""
    if os.environ.get("ELASTICDIT_CACHE"):
        return Path(os.environ["ELASTICDIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "elasticdit"
