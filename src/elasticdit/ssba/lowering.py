"""Choose an attention core for one layer: the registry of SSBA lowerings.

A lowering is a factory `(head_dim, pattern) -> nn.Module` whose `forward(q, k, v)` equals `MaskedAttention`
(docs/design.md, "SSBA"); `register_lowering(name)` adds one (a custom-kernel core registers here), and a recipe's
`lowering.attention` names it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .cores import DenseAttention, MaskedAttention
from .kernel import KernelAttention
from .pattern import SSBAPattern
from .slices import SlicesAttention
from .tiles import TilesAttention

CoreFactory = Callable[[int, SSBAPattern], nn.Module]

_LOWERINGS: dict[str, CoreFactory] = {}


def register_lowering(name: str) -> Callable[[CoreFactory], CoreFactory]:
    """Bind a core factory to the name recipes use; a name is bound once."""

    def bind(factory: CoreFactory) -> CoreFactory:
        if name in _LOWERINGS or name == "dense":
            raise ValueError(f"attention lowering '{name}' is already registered")
        _LOWERINGS[name] = factory
        return factory

    return bind


register_lowering("kernel")(KernelAttention)  # elasticdit's own ExecuTorch op: needs a runtime built with it
register_lowering("masked")(MaskedAttention)
register_lowering("slices")(SlicesAttention)
register_lowering("tiles")(TilesAttention)


def lowering_names() -> list[str]:
    return ["dense", *sorted(_LOWERINGS)]


def make_core(kind: str, head_dim: int, pattern: SSBAPattern | None) -> nn.Module:
    """`dense` ignores the pattern; every other kind needs one, and a dense pattern runs plain attention."""
    if kind not in lowering_names():
        raise ValueError(f"unknown attention lowering '{kind}'; known: {', '.join(lowering_names())}")
    if kind == "dense" or pattern is None or (pattern.is_dense and kind != "masked"):
        return DenseAttention(head_dim)
    return _LOWERINGS[kind](head_dim, pattern)
