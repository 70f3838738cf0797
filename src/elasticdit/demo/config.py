"""The demo's model: the configuration the embedded checkpoint was trained with, and its words."""

from __future__ import annotations

from ..config import (
    ElasticConfig,
    ModelConfig,
    SchedulerConfig,
    SSBAConfig,
    TextEncoderConfig,
    TransformerConfig,
    VAEConfig,
)
from ..model.text_encoder import SPECIAL_TOKENS

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
