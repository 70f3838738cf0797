"""diffusers' VAE decoders with their tensor names: `AutoencoderKL` (SD3's) and `AutoencoderTiny` (TAESD3).

In the formulation XNNPACK delegates: GroupNorm's statistics as means over the last two dims of a 4-D
[B, groups, C/groups, H*W] view (XNNPACK's global average pooling), the mid-block attention as 3-D batched
matmuls, nearest upsampling as a rank-5 broadcast multiply by ones (`F.interpolate`'s upsample_nearest2d stays
outside the delegate and splits the graph; rank 5 because Core ML takes no tensor of higher rank). Same
interface as the T-DVAE: `decode` takes the unscaled latent and returns the image in [0, 1]; `unscale` undoes
the transformer's `(z - shift_factor) * scaling_factor`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sd3_config import AutoencoderKLConfig, AutoencoderTinyConfig


class GroupNorm(nn.Module):
    """`nn.GroupNorm(groups, C, eps, affine=True)`; the means are taken over a 4-D view's last two dims."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b, self.groups, c // self.groups, h * w)
        centred = g - g.mean(dim=(-2, -1), keepdim=True)
        normed = centred * torch.rsqrt((centred * centred).mean(dim=(-2, -1), keepdim=True) + self.eps)
        return normed.reshape(b, c, h, w) * self.weight.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)


class ResnetBlock2D(nn.Module):
    def __init__(self, n_in: int, n_out: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = GroupNorm(groups, n_in), nn.Conv2d(n_in, n_out, 3, padding=1)
        self.norm2, self.conv2 = GroupNorm(groups, n_out), nn.Conv2d(n_out, n_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(n_in, n_out, 1) if n_in != n_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class VAEAttention(nn.Module):
    """The mid block's single-head spatial self-attention with a residual (diffusers' `Attention` as a VAE block)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)
        scores = torch.bmm(self.to_q(t) * c**-0.5, self.to_k(t).transpose(1, 2))
        out = self.to_out[0](torch.bmm(scores.softmax(-1), self.to_v(t)))
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class UNetMidBlock2D(nn.Module):
    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([VAEAttention(channels, groups)]) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


def nearest_up(x: torch.Tensor, ones: torch.Tensor) -> torch.Tensor:
    """`F.interpolate(x, scale_factor=f, mode="nearest")`, exactly, as a rank-5 broadcast multiply by `ones`
    [1, 1, f, 1, f] (a buffer, so the graph holds a constant rather than a `full` op; rank 5 because Core ML takes
    no tensor of higher rank)."""
    b, c, h, w = x.shape
    f = ones.shape[-1]
    return (x.reshape(b * c, h, 1, w, 1) * ones).reshape(b, c, h * f, w * f)


class Upsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.register_buffer("ones", torch.ones(1, 1, 2, 1, 2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nearest_up(x, self.ones))


class UpDecoderBlock2D(nn.Module):
    def __init__(self, n_in: int, n_out: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock2D(n_in if i == 0 else n_out, n_out, groups) for i in range(layers))
        self.upsamplers = nn.ModuleList([Upsample2D(n_out)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class KLDecoder(nn.Module):
    def __init__(self, cfg: AutoencoderKLConfig):
        super().__init__()
        widths, groups = list(reversed(cfg.block_out_channels)), cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.mid_block = UNetMidBlock2D(widths[0], groups, cfg.mid_block_add_attention)
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock2D(widths[max(i - 1, 0)], w, cfg.layers_per_block + 1, groups, i < len(widths) - 1)
            for i, w in enumerate(widths)
        )
        self.conv_norm_out = GroupNorm(groups, widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class TinyBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x) + x)


class NearestUp(nn.Module):
    def __init__(self, factor: int):
        super().__init__()
        self.register_buffer("ones", torch.ones(1, 1, factor, 1, factor), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nearest_up(x, self.ones)


class TinyDecoder(nn.Module):
    """diffusers `DecoderTiny`: `layers` is one Sequential, indexed as diffusers indexes it."""

    def __init__(self, cfg: AutoencoderTinyConfig):
        super().__init__()
        widths = cfg.block_out_channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1), nn.ReLU()]
        for i, n in enumerate(cfg.num_blocks):
            last = i == len(cfg.num_blocks) - 1
            layers += [TinyBlock(widths[i]) for _ in range(n)]
            if not last:
                layers.append(NearestUp(cfg.upsampling_scaling_factor))
            layers.append(nn.Conv2d(widths[i], 3 if last else widths[i], 3, padding=1, bias=last))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.tanh(z / 3) * 3) * 2 - 1


class DiffusersVAE(nn.Module):
    """`decoder` (and `post_quant_conv` when the KL config uses one); no encoder."""

    def __init__(self, cfg: AutoencoderKLConfig | AutoencoderTinyConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = None
        kl = isinstance(cfg, AutoencoderKLConfig)
        self.decoder = KLDecoder(cfg) if kl else TinyDecoder(cfg)
        if kl and cfg.use_post_quant_conv:
            self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)
        else:
            self.post_quant_conv = None

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Unscaled latent [B, C, h, w] -> image [B, 3, f*h, f*w] in [0, 1] (diffusers' postprocess)."""
        if self.post_quant_conv is not None:
            latent = self.post_quant_conv(latent)
        return (self.decoder(latent) * 0.5 + 0.5).clamp(0.0, 1.0)

    def scale(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.cfg.shift_factor) * self.cfg.scaling_factor

    def unscale(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.cfg.scaling_factor + self.cfg.shift_factor
