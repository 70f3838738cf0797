"""Slicing: every method a bundle holds as a static module with fixed shapes and example inputs.

Shared by every target: the lowering stage (`lowering.py`) exports these units for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .model.pipeline import Models
from .model.tdvae import TDVAE
from .model.text_encoder import TextEncoder
from .operating_points import OperatingPoint
from .specs import MethodKind, TensorSpec, example_inputs


@dataclass
class ExportUnit:
    method: str
    kind: MethodKind
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    point: OperatingPoint | None = None
    resolution: tuple[int, int] | None = None  # denoise and decode: the image size the method is fixed to
    chunk: int | None = None  # a piece of a chunked point: its block range's package (chunking.py)


def method_name(base: str, resolution: tuple[int, int], default: tuple[int, int]) -> str:
    """`denoise_r2_d4` / `decode` at the bundle's default resolution, `denoise_r2_d4_768x1344` at another."""
    return base if tuple(resolution) == tuple(default) else f"{base}_{resolution[0]}x{resolution[1]}"


class Decode(nn.Module):
    """decode: unscaled latent [1, 16, h, w] -> image [1, 3, H, W] in [0, 1]."""

    def __init__(self, vae: TDVAE):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent)


class EncodeText(nn.Module):
    """encode_text: tokens [1, L] int64 -> text [1, L, Dt], pooled [1, Dp]."""

    def __init__(self, encoder: TextEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(tokens)


def denoise_unit(
    models: Models,
    point: OperatingPoint,
    resolution: tuple[int, int],
    attention: str,
    batch: int = 1,
    default: tuple[int, int] | None = None,
) -> ExportUnit:
    """`default`: the bundle's default resolution (the method name's suffix names any other)."""
    cfg = models.cfg
    t = cfg.transformer
    lh, lw = cfg.latent_size(resolution)
    specs = [
        TensorSpec("latent", [batch, t.in_channels, lh, lw]),
        TensorSpec("timestep", [batch]),
        TensorSpec("text", [batch, t.text_len, t.text_dim]),
        TensorSpec("pooled", [batch, t.pooled_dim]),
    ]
    module = models.transformer.operating_point(point, resolution, attention).eval()
    return ExportUnit(
        method=method_name(point.method, resolution, default or resolution),
        kind=MethodKind.DENOISE,
        module=module,
        example_inputs=example_inputs(specs),
        inputs=specs,
        outputs=[TensorSpec("velocity", [batch, t.in_channels, lh, lw])],
        point=point,
        resolution=(resolution[0], resolution[1]),
    )


def decode_unit(models: Models, resolution: tuple[int, int], default: tuple[int, int] | None = None) -> ExportUnit:
    assert models.vae is not None
    lh, lw = models.cfg.latent_size(resolution)
    specs = [TensorSpec("latent", [1, models.cfg.vae.latent_channels, lh, lw])]
    return ExportUnit(
        method=method_name("decode", resolution, default or resolution),
        kind=MethodKind.DECODE,
        module=Decode(models.vae).eval(),
        example_inputs=example_inputs(specs),
        inputs=specs,
        outputs=[TensorSpec("image", [1, 3, resolution[0], resolution[1]])],
        resolution=(resolution[0], resolution[1]),
    )


def encode_text_unit(models: Models) -> ExportUnit:
    assert models.text_encoder is not None
    t = models.cfg.transformer
    length = getattr(models.text_encoder, "token_count", t.text_len)  # SD3: [CLIP-L | CLIP-G (| T5)] ids
    specs = [TensorSpec("tokens", [1, length], "int64")]
    return ExportUnit(
        method="encode_text",
        kind=MethodKind.ENCODE_TEXT,
        module=EncodeText(models.text_encoder).eval(),
        example_inputs=example_inputs(specs),
        inputs=specs,
        outputs=[TensorSpec("text", [1, t.text_len, t.text_dim]), TensorSpec("pooled", [1, t.pooled_dim])],
    )


def export_units(
    models: Models,
    points: list[OperatingPoint],
    resolutions: list[tuple[int, int]],
    attention: str,
    batch: int = 1,
) -> list[ExportUnit]:
    """Denoise methods for the points (heaviest first) at each resolution (the first is the default), then decode
    at each resolution and encode_text when present."""
    default = resolutions[0]
    units = [denoise_unit(models, p, r, attention, batch, default) for r in resolutions for p in points]
    if models.vae is not None:
        units += [decode_unit(models, r, default) for r in resolutions]
    if models.text_encoder is not None:
        units.append(encode_text_unit(models))
    return units
