"""Model configurations the tests build: a tiny one (a few hundred KB, for fast tests) and the paper's scale
(counted on the meta device only)."""

from __future__ import annotations

from elasticdit.config import (
    ElasticConfig,
    ModelConfig,
    SchedulerConfig,
    SSBAConfig,
    TextEncoderConfig,
    TransformerConfig,
    VAEConfig,
)
from elasticdit.demo.config import DEMO_WORDS
from elasticdit.model.text_encoder import SPECIAL_TOKENS


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
