"""The targets, by name: the one place that lists them. A new backend is a folder beside these and a line here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..errors import ExportError
from ..recipes import Recipe, load_recipe
from .android import AndroidTarget
from .base import Artifact, Target
from .ios import IOSTarget
from .onnx import OnnxTarget

TARGETS: Mapping[str, Target] = MappingProxyType({t.name: t for t in (AndroidTarget(), IOSTarget(), OnnxTarget())})


def get_target(name: str) -> Target:
    if name not in TARGETS:
        names = list(TARGETS)
        raise ExportError(f"unknown target '{name}'; choose {', '.join(names[:-1])} or {names[-1]}")
    return TARGETS[name]


def target_recipe(name_or_path: str | None, target: str) -> Recipe:
    """The recipe named (or at the path given) for the target of that name; its default when None."""
    return load_recipe(name_or_path, get_target(target), TARGETS)


__all__ = ["TARGETS", "Artifact", "Target", "get_target", "target_recipe"]
