"""Memory footprint before any export: the weight bytes each operating point keeps resident, the bytes a bundle's
weight file holds, and the phone limits they are checked against (docs/design.md, "Phone limits").

Figures come from the model's structure on the meta device (no weights read, nothing lowered), in the storage a
recipe gives its tensors (`WeightStorage`: float bytes per element, and the bytes per element of a quantized
denoise weight, scales included). They are plans, not measurements: the artifact's own bytes are in the manifest's
`files`, and a profile's measured peak replaces them where there is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig
from .model.pipeline import build_models
from .operating_points import OperatingPoint

GIB = 1 << 30


@dataclass(frozen=True)
class WeightStorage:
    """How an artifact stores tensors: bytes per element of a float tensor, and of a quantized denoise weight
    (a Linear or Conv weight of the transformer, where the recipe quantizes)."""

    float_bytes: float = 4.0
    quant_bytes: float = 4.0


@dataclass(frozen=True)
class PhoneLimits:
    """Limits a target's artifacts must respect; None: no limit. `weight_file_bytes`: one weight file (Core ML's
    `weight.bin` fails to load past 2 GiB); `function_bytes`: one function's weights (the Neural Engine wants
    pieces under about 1 GB)."""

    weight_file_bytes: int | None = None
    function_bytes: int | None = None
    weight_file_rule: str = "one weight file"
    function_rule: str = "one function"


def _quantizable(module: nn.Module, name: str) -> bool:
    return name == "weight" and isinstance(module, nn.Linear | nn.Conv2d)


def _touched(net: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[int, tuple[torch.Tensor, bool]]:
    """Every parameter and buffer of the modules one forward touches: id -> (tensor, quantizable)."""
    touched: dict[int, nn.Module] = {}

    def note(module: nn.Module, _args: tuple) -> None:
        touched[id(module)] = module

    hooks = [m.register_forward_pre_hook(note) for m in net.modules()]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    found: dict[int, tuple[torch.Tensor, bool]] = {}
    for m in touched.values():
        for name, p in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
            found[id(p)] = (p, _quantizable(m, name))
    return found


def _bytes(tensors: Iterable[tuple[torch.Tensor, bool]], storage: WeightStorage, quantized: bool) -> int:
    total = 0.0
    for t, quantizable in tensors:
        total += t.numel() * (storage.quant_bytes if quantized and quantizable else storage.float_bytes)
    return int(total)


def _point_inputs(cfg: ModelConfig, resolution: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    t = cfg.transformer
    lh, lw = cfg.latent_size(resolution)
    with torch.device("meta"):
        return (
            torch.zeros(1, t.in_channels, lh, lw),
            torch.full((1,), 0.5),
            torch.zeros(1, t.text_len, t.text_dim),
            torch.zeros(1, t.pooled_dim),
        )


@dataclass
class Footprint:
    """Planned weight bytes in one storage: per denoise point (what its function keeps resident), the other
    methods', and the weight file holding them all once."""

    points: dict[str, int]
    others: dict[str, int]
    total: int


Tensors = dict[int, tuple[torch.Tensor, bool]]  # id -> (tensor, quantizable)


@dataclass
class WeightPlan:
    """Which tensors each method keeps resident (found once, on the meta device); bytes for any storage."""

    points: dict[str, Tensors]
    others: dict[str, Tensors]

    def footprint(self, storage: WeightStorage) -> Footprint:
        every: Tensors = {}
        for found in self.points.values():
            every.update(found)
        others = {n: _bytes(t.values(), storage, False) for n, t in self.others.items()}
        return Footprint(
            points={n: _bytes(t.values(), storage, True) for n, t in self.points.items()},
            others=others,
            total=_bytes(every.values(), storage, True) + sum(others.values()),
        )


def point_key(name: str, resolution: tuple[int, int], default: tuple[int, int]) -> str:
    """A point's key in a plan: its name at the default resolution, `NAME_HxW` at another (its method's suffix)."""
    return name if tuple(resolution) == tuple(default) else f"{name}_{resolution[0]}x{resolution[1]}"


def weight_plan(
    cfg: ModelConfig, points: list[OperatingPoint], resolutions: tuple[int, int] | list[tuple[int, int]]
) -> WeightPlan:
    """The tensors of every point's function (one per resolution, the first the default: `point_key`) and of
    decode / encode_text, on meta-device models of `cfg`: no weights are read and nothing is computed."""
    given = [resolutions] if isinstance(resolutions[0], int) else resolutions  # one resolution or several
    sizes = [(int(h), int(w)) for h, w in given]  # type: ignore[misc]
    models = build_models(cfg, "meta")
    per_point = {}
    for resolution in sizes:
        inputs = _point_inputs(cfg, resolution)
        for point in points:
            net = models.transformer.operating_point(point, resolution, "dense").to("meta")
            per_point[point_key(point.name, resolution, sizes[0])] = _touched(net, inputs)
    others: dict[str, Tensors] = {}
    if models.vae is not None:
        decode = [p for n, p in models.vae.named_parameters() if not n.startswith("encoder.")]  # decode's part
        others["decode"] = {id(p): (p, False) for p in decode}
    if models.text_encoder is not None:
        others["encode_text"] = {id(p): (p, False) for p in models.text_encoder.parameters()}
    return WeightPlan(per_point, others)


def size(n: int) -> str:
    """Bytes for a message: GiB for big figures, MiB with the exact count for small ones (tests use tiny limits)."""
    return f"{n / GIB:.2f} GiB" if n >= GIB // 10 else f"{n / 2**20:.2f} MiB ({n} bytes)"


def over_limits(fp: Footprint, limits: PhoneLimits) -> list[str]:
    """What breaks the limits, one phrase each (empty: it fits)."""
    problems = []
    if limits.weight_file_bytes is not None and fp.total > limits.weight_file_bytes:
        problems.append(
            f"{size(fp.total)} of weights in {limits.weight_file_rule} (limit {size(limits.weight_file_bytes)})"
        )
    if limits.function_bytes is not None:
        big = {n: b for n, b in {**fp.points, **fp.others}.items() if b > limits.function_bytes}
        if big:
            worst = max(big, key=lambda n: big[n])
            problems.append(
                f"{len(big)} function(s) over the {limits.function_rule} limit of {size(limits.function_bytes)} "
                f"({', '.join(sorted(big))}; {worst}: {size(big[worst])})"
            )
    return problems
