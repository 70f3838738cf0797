"""Choose an attention core for one layer: the registry of SSBA lowerings."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .cores import DenseAttention, MaskedAttention
from .pattern import SSBAPattern
from .slices import SlicesAttention
from .tiles import TilesAttention

CoreFactory = Callable[[int, SSBAPattern], nn.Module]

_LOWERINGS: dict[str, CoreFactory] = {
    "masked": MaskedAttention,
    "slices": SlicesAttention,
    "tiles": TilesAttention,
}


def register_lowering(name: str) -> Callable[[CoreFactory], CoreFactory]:
    def bind(factory: CoreFactory) -> CoreFactory:
        _LOWERINGS[name] = factory
        return factory

    return bind


def lowering_names() -> list[str]:
    return ["dense", *sorted(_LOWERINGS)]


def make_core(kind: str, head_dim: int, pattern: SSBAPattern | None) -> nn.Module:
    """`dense` ignores the pattern; every other kind needs one, and a dense pattern runs plain attention."""
    if kind not in lowering_names():
        raise ValueError(f"unknown attention lowering '{kind}'; known: {', '.join(lowering_names())}")
    if kind == "dense" or pattern is None or (pattern.is_dense and kind != "masked"):
        return DenseAttention(head_dim)
    return _LOWERINGS[kind](head_dim, pattern)
