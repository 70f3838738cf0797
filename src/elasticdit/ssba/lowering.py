"""Choose an attention core for one layer: the registry of SSBA lowerings.

A lowering is a factory `(head_dim, pattern) -> nn.Module` whose `forward(q, k, v)` equals `MaskedAttention`
(docs/design.md, "SSBA"); `register_lowering(name)` adds one (a custom-kernel core registers here with the custom
operators its graph calls, which only a target whose runtime provides them takes: `Target.custom_ops`), and a
recipe's `lowering.attention` names it.
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
_CUSTOM_OPS: dict[str, tuple[str, ...]] = {}


def register_lowering(name: str, custom_ops: tuple[str, ...] = ()) -> Callable[[CoreFactory], CoreFactory]:
    """Bind a core factory to the name recipes use; a name is bound once. `custom_ops`: the operators outside
    the stock runtimes its graphs call."""

    def bind(factory: CoreFactory) -> CoreFactory:
        if name in _LOWERINGS or name == "dense":
            raise ValueError(f"attention lowering '{name}' is already registered")
        _LOWERINGS[name] = factory
        _CUSTOM_OPS[name] = tuple(custom_ops)
        return factory

    return bind


# elasticdit's own ExecuTorch op: needs a runtime built with it
register_lowering("kernel", custom_ops=("elasticdit::ssba_attention",))(KernelAttention)
register_lowering("masked")(MaskedAttention)
register_lowering("slices")(SlicesAttention)
register_lowering("tiles")(TilesAttention)


def lowering_names() -> list[str]:
    return ["dense", *sorted(_LOWERINGS)]


def lowering_custom_ops(kind: str) -> tuple[str, ...]:
    """The custom operators a lowering's graphs call (none for the stock lowerings)."""
    return _CUSTOM_OPS.get(kind, ())


def make_core(kind: str, head_dim: int, pattern: SSBAPattern | None) -> nn.Module:
    """`dense` ignores the pattern; every other kind needs one, and a dense pattern runs plain attention."""
    if kind not in lowering_names():
        raise ValueError(f"unknown attention lowering '{kind}'; known: {', '.join(lowering_names())}")
    if kind == "dense" or pattern is None or (pattern.is_dense and kind != "masked"):
        return DenseAttention(head_dim)
    return _LOWERINGS[kind](head_dim, pattern)
