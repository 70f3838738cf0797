"""T-DVAE: a tiny decoder that upsamples with fixed Haar inverse wavelet transforms.

Each stage predicts the four Haar sub-bands (LL, LH, HL, HH) of the next, twice as large, feature map and
applies the fixed inverse transform; the last stage's sub-bands are the image's. The encoder mirrors it with
the forward transform. Written in the manner of TAESD: one conv helper, one residual block, Sequentials.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VAEConfig


def conv(n_in: int, n_out: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, kernel, padding=kernel // 2)


class Block(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.conv = nn.Sequential(conv(n, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x) + x)


def _haar_mix(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The orthonormal 2x2 Haar matrix; it is its own inverse."""
    return torch.stack([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d], dim=2) * 0.5


def haar_idwt(bands: torch.Tensor) -> torch.Tensor:
    """[B, 4*C, h, w] (LL, LH, HL, HH, each C channels) -> [B, C, 2h, 2w]."""
    c = bands.shape[1] // 4
    ll, lh, hl, hh = (bands[:, i * c : (i + 1) * c] for i in range(4))
    phases = _haar_mix(ll, lh, hl, hh)  # [B, C, 4, h, w]: pixels (0,0), (0,1), (1,0), (1,1)
    return F.pixel_shuffle(phases.flatten(1, 2), 2)


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """[B, C, 2h, 2w] -> [B, 4*C, h, w] as LL, LH, HL, HH; `haar_idwt(haar_dwt(x)) == x`."""
    c = x.shape[1]
    phases = F.pixel_unshuffle(x, 2).unflatten(1, (c, 4))
    bands = _haar_mix(phases[:, :, 0], phases[:, :, 1], phases[:, :, 2], phases[:, :, 3])  # [B, C, 4, h, w]
    return bands.transpose(1, 2).flatten(1, 2)


class IDWTUp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return haar_idwt(x)


class DWTDown(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return haar_dwt(x)


def Decoder(cfg: VAEConfig) -> nn.Sequential:
    widths = cfg.decoder_widths
    layers: list[nn.Module] = [conv(cfg.latent_channels, widths[0]), nn.ReLU()]
    layers += [Block(widths[0]) for _ in range(cfg.latent_blocks)]
    for level, width in enumerate(widths):
        out = widths[level + 1] if level + 1 < len(widths) else 3
        layers += [conv(width, 4 * out), IDWTUp()]
        if level + 1 < len(widths):
            layers += [nn.ReLU(), Block(out)]
    return nn.Sequential(*layers)


def Encoder(cfg: VAEConfig) -> nn.Sequential:
    widths = cfg.decoder_widths[::-1]  # fine to coarse
    layers: list[nn.Module] = [DWTDown(), conv(12, widths[0]), nn.ReLU(), Block(widths[0])]
    for level in range(1, len(widths)):
        layers += [DWTDown(), conv(4 * widths[level - 1], widths[level]), nn.ReLU(), Block(widths[level])]
    layers += [Block(widths[-1]) for _ in range(max(cfg.latent_blocks - 1, 0))]
    layers += [conv(widths[-1], cfg.latent_channels)]
    return nn.Sequential(*layers)


class TDVAE(nn.Module):
    """`decoder` always; `encoder` when the checkpoint carries one. Images live in [-1, 1] inside."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder = Decoder(cfg)
        self.encoder = Encoder(cfg) if cfg.has_encoder else None

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Unscaled latent [B, 16, h, w] -> image [B, 3, 8h, 8w] in [0, 1]."""
        return (self.decoder(latent) * 0.5 + 0.5).clamp(0.0, 1.0)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [0, 1] -> unscaled latent."""
        if self.encoder is None:
            raise ValueError("this checkpoint has no VAE encoder")
        return self.encoder(image * 2.0 - 1.0)

    def scale(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latent -> the transformer's latent space."""
        return (latent - self.cfg.shift_factor) * self.cfg.scaling_factor

    def unscale(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.cfg.scaling_factor + self.cfg.shift_factor
