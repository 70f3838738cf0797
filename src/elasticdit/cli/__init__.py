"""The `elasticdit` command line. Each command is a thin shell over a module that does the work; the commands are
registered in the order `--help` lists them."""

from __future__ import annotations

# isort: on
from ..quiet import silence_library_noise

# isort: off  (importing a module registers its commands: the order is `--help`'s)
from . import bundle_cmds, checkpoint_cmds, device_cmds, image_cmds  # noqa: F401
from .app import app

__all__ = ["app", "main"]


def main() -> None:
    silence_library_noise()
    app()
