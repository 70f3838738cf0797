"""Named model configurations and seeded random weights (for the embedded demo, tests and benchmarks)."""

from __future__ import annotations

import torch

from .config import (
    ElasticConfig,
    ModelConfig,
    SchedulerConfig,
    SSBAConfig,
    TextEncoderConfig,
    TransformerConfig,
    VAEConfig,
)
from .model.pipeline import build_models
from .model.text_encoder import SPECIAL_TOKENS

DEMO_WORDS = (
    "a",
    "an",
    "one",
    "two",
    "three",
    "and",
    "of",
    "the",
    "left",
    "right",
    "above",
    "below",
    "on",
    "at",
    "in",
    "top",
    "bottom",
    "centre",
    "center",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "cyan",
    "circle",
    "circles",
    "square",
    "squares",
    "triangle",
    "triangles",
)


def demo_config() -> ModelConfig:
    """The trained demo: 128x128 px, an f4 T-DVAE (latent 32x32x16) and patch 2, so the ratio-1 token grid is
    16x16 and SSBA tile 4 / window 1 is sparse there (a 4x4 tile grid; the 8x8 and 4x4 grids of ratios 2 and 4
    fit one window and run dense); three depth plans nested 6 > 4 > 3; a 2-layer word-level text encoder.

    Trained by `python -m elasticdit.demo.train` (see docs/demo.md); the scaling and shift factors in the
    shipped checkpoint come from its latents, not from here.
    """
    return ModelConfig(
        transformer=TransformerConfig(
            hidden_size=128,
            num_heads=4,
            num_blocks=6,
            mlp_ratio=2.0,
            patch_size=2,
            in_channels=16,
            text_dim=64,
            text_len=12,
            pooled_dim=64,
            qk_norm=True,
            prediction="sample",
        ),
        elastic=ElasticConfig(
            compression_ratios=(1, 2, 4),
            depths={"6": (0, 1, 2, 3, 4, 5), "4": (0, 1, 4, 5), "3": (0, 1, 5)},
        ),
        ssba=SSBAConfig(enabled=True, tile=4, window=1),
        scheduler=SchedulerConfig(shift=3.0, steps=20, guidance_scale=4.0),
        resolution=(128, 128),
        vae=VAEConfig(decoder_widths=(64, 32), latent_blocks=2, wavelet_levels=2, downsample=4, has_encoder=True),
        text_encoder=TextEncoderConfig(vocab=SPECIAL_TOKENS + DEMO_WORDS, width=64, layers=2, heads=4),
    )


def tiny_config(
    ratios: tuple[int, ...] = (1, 2),
    resolution: tuple[int, int] = (128, 128),
    ssba: bool = True,
    qk_norm: bool = True,
    vae: bool = True,
    text_encoder: bool = False,
    tile: int = 2,
) -> ModelConfig:
    """A few-hundred-KB model for fast tests."""
    return ModelConfig(
        transformer=TransformerConfig(
            hidden_size=32,
            num_heads=2,
            num_blocks=4,
            mlp_ratio=2.0,
            patch_size=2,
            in_channels=16,
            text_dim=24,
            text_len=5,
            pooled_dim=12,
            qk_norm=qk_norm,
        ),
        elastic=ElasticConfig(compression_ratios=ratios, depths={"4": (0, 1, 2, 3), "2": (0, 3)}),
        ssba=SSBAConfig(enabled=ssba, tile=tile, window=1),
        scheduler=SchedulerConfig(shift=3.0, steps=4, guidance_scale=3.0),
        resolution=resolution,
        vae=VAEConfig(decoder_widths=(16, 8, 8), latent_blocks=1, has_encoder=True) if vae else None,
        text_encoder=TextEncoderConfig(vocab=SPECIAL_TOKENS + DEMO_WORDS, width=16, layers=1, heads=2)
        if text_encoder
        else None,
    )


def mobile_config() -> ModelConfig:
    """The benchmarks' mobile-scale model: width 512 (8 heads of 64), 12 blocks, 512 px (1024 tokens at ratio 1,
    SSBA tile 8: a 4x4 tile grid), ratios 1/2/4, four depth plans; random weights, no VAE encoder."""
    return ModelConfig(
        transformer=TransformerConfig(
            hidden_size=512,
            num_heads=8,
            num_blocks=12,
            mlp_ratio=4.0,
            patch_size=2,
            in_channels=16,
            text_dim=512,
            text_len=77,
            pooled_dim=512,
            qk_norm=True,
        ),
        elastic=ElasticConfig(
            compression_ratios=(1, 2, 4),
            depths={
                "12": tuple(range(12)),
                "9": (0, 1, 2, 3, 4, 5, 8, 9, 11),
                "6": (0, 1, 2, 3, 10, 11),
                "4": (0, 1, 10, 11),
            },
        ),
        ssba=SSBAConfig(enabled=True, tile=8, window=1),
        scheduler=SchedulerConfig(shift=3.0, steps=20, guidance_scale=4.5),
        resolution=(512, 512),
        vae=VAEConfig(decoder_widths=(64, 32, 16), latent_blocks=2),
    )


def paper_scale_config() -> ModelConfig:
    """1024 px, f8 latent, patch 2 (a 64x64 token grid at ratio 1), SSBA tile 8 window 1: ~86% image sparsity."""
    return ModelConfig(
        transformer=TransformerConfig(
            hidden_size=1536,
            num_heads=24,
            num_blocks=24,
            mlp_ratio=4.0,
            patch_size=2,
            in_channels=16,
            text_dim=4096,
            text_len=77,
            pooled_dim=2048,
            qk_norm=True,
        ),
        elastic=ElasticConfig(
            compression_ratios=(1, 2, 4),
            depths={
                "24": tuple(range(24)),
                "16": tuple(range(8)) + tuple(range(16, 24)),
                "12": tuple(range(6)) + tuple(range(18, 24)),
            },
        ),
        ssba=SSBAConfig(enabled=True, tile=8, window=1),
        scheduler=SchedulerConfig(),
        resolution=(1024, 1024),
        vae=VAEConfig(decoder_widths=(128, 64, 32)),
    )


def random_weights(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """PyTorch's default initialisation under a fixed seed; adaLN and output layers are not zeroed, so every
    path of the network carries signal (useful for numerics tests)."""
    torch.manual_seed(seed)
    models = build_models(cfg)
    state = models.state_dict()
    generator = torch.Generator().manual_seed(seed + 1)
    for name, t in state.items():
        if name.endswith("pos_embed.pos_embed") or name.endswith("position_embedding"):
            t.copy_(torch.randn(t.shape, generator=generator) * 0.1)
    return {k: v.detach().clone() for k, v in state.items()}
