"""What a bundle method takes and returns: tensor specs, the three method kinds, and seeded example inputs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch


class MethodKind(StrEnum):
    """The three kinds of method a bundle holds (docs/design.md, "Bundle")."""

    DENOISE = "denoise"
    DECODE = "decode"
    ENCODE_TEXT = "encode_text"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[int]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_dict(doc: dict[str, Any]) -> TensorSpec:
        return TensorSpec(doc["name"], list(doc["shape"]), doc.get("dtype", "float32"))


def example_inputs(shapes: list[TensorSpec], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of the given shapes: latents ~ N(0, 1), timesteps in (0, 1), token ids of words."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for spec in shapes:
        if spec.dtype in ("int64", "int32"):  # token ids (Core ML packages take int32)
            ids = torch.randint(3, 8, spec.shape, generator=g)
            ids[..., 0] = 1  # <start>
            out.append(ids.to(getattr(torch, spec.dtype)))
        elif spec.name == "timestep":
            out.append(torch.rand(spec.shape, generator=g) * 0.9 + 0.05)
        else:
            out.append(torch.randn(spec.shape, generator=g))
    return tuple(out)
