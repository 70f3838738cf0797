"""The checkpoint's configuration (format v1): one dataclass per section, parsed strictly from JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .config_sections import section as _section
from .errors import ConfigError, ConfigParseError, DepthPlanError, GridError
from .sd3_config import (
    AutoencoderKLConfig,
    AutoencoderTinyConfig,
    SD3TextConfig,
    parse_text_encoders,
    parse_vae,
    validate_text_encoders,
    validate_vae,
)

FORMAT_NAME = "elasticdit-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "elasticdit.config"
# Field metadata of keys added after v1's first checkpoints: written only when they differ from their default,
# so a config that does not use them serialises byte for byte as before (demo states compare config JSON).
LATER = {"omit_default": True}


@dataclass(frozen=True)
class TransformerConfig:
    hidden_size: int
    num_heads: int
    num_blocks: int
    mlp_ratio: float = 4.0
    patch_size: int = 2
    in_channels: int = 16
    text_dim: int = 4096
    text_len: int = 77
    pooled_dim: int = 2048
    qk_norm: bool = False
    pos_embed: str = "sincos"  # "sincos" (elastic, base-patch units) or "cropped" (SD3's stored table)
    pos_embed_max_size: int = 0  # side of the stored table when pos_embed == "cropped"
    context_pre_only_last: bool = False  # SD3: the last block has no text output path
    # What the output projection predicts. "velocity": the velocity itself (SD3). "sample": the clean latent x0,
    # turned into velocity = (x_sigma - x0) / max(sigma, SIGMA_FLOOR) inside the network, so a denoise method
    # returns velocity either way. A coarse ratio's token carries (patch*ratio)^2 * C values through hidden_size
    # features: the noise cannot pass such a bottleneck, the clean latent (flat, low-rank) can.
    prediction: str = "velocity"
    # SD3.5's MMDiT-X: blocks with a second, image-only self-attention (`attn2`). Written only when set.
    dual_attention_layers: tuple[int, ...] = field(default=(), metadata=LATER)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


@dataclass(frozen=True)
class ElasticConfig:
    compression_ratios: tuple[int, ...] = (1,)
    depths: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SSBAConfig:
    enabled: bool = True
    tile: int = 8  # tokens per tile side
    window: int = 1  # radius in tiles: a query tile sees a (2w+1) x (2w+1) window
    shift: str = "odd_blocks"  # blocks of odd index tile the grid rolled by tile // 2
    text: str = "global"


@dataclass(frozen=True)
class VAEConfig:
    latent_channels: int = 16
    downsample: int = 8
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    decoder_widths: tuple[int, ...] = (64, 32, 16)  # one width per wavelet level, coarse to fine
    latent_blocks: int = 2  # residual blocks at latent resolution
    wavelet_levels: int = 3
    has_encoder: bool = False


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab: tuple[str, ...]
    width: int = 128
    layers: int = 2
    heads: int = 4


@dataclass(frozen=True)
class SchedulerConfig:
    # "rectified_flow_euler": sigmas linspace(1, 0, steps + 1), shifted. "flow_match_euler": diffusers'
    # FlowMatchEulerDiscreteScheduler (static shift), whose sigmas stop at the shift of 1/num_train_timesteps.
    kind: str = "rectified_flow_euler"
    shift: float = 3.0
    steps: int = 28
    guidance_scale: float = 7.0
    num_train_timesteps: int = field(default=1000, metadata=LATER)


@dataclass(frozen=True)
class ModelConfig:
    transformer: TransformerConfig
    elastic: ElasticConfig
    ssba: SSBAConfig
    scheduler: SchedulerConfig
    resolution: tuple[int, int] = (1024, 1024)
    vae: VAEConfig | AutoencoderKLConfig | AutoencoderTinyConfig | None = None
    text_encoder: TextEncoderConfig | None = None
    # a converted SD3 pipeline's CLIP (and T5) encoders; written only when set (sd3_config.py)
    text_encoders: SD3TextConfig | None = field(default=None, metadata=LATER)

    @property
    def full_depth(self) -> str:
        """Name of the depth plan that runs the most blocks."""
        return max(self.elastic.depths, key=lambda name: len(self.elastic.depths[name]))

    def latent_size(self, resolution: tuple[int, int] | None = None) -> tuple[int, int]:
        h, w = resolution or self.resolution
        f = self.vae.downsample if self.vae else 8
        return h // f, w // f

    def token_grid(self, ratio: int, resolution: tuple[int, int] | None = None) -> tuple[int, int]:
        lh, lw = self.latent_size(resolution)
        cell = self.transformer.patch_size * ratio
        return lh // cell, lw // cell

    def to_dict(self) -> dict[str, Any]:
        out = _asdict(self)
        out["elastic"]["depths"] = {k: list(v) for k, v in self.elastic.depths.items()}
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **_lists(out)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> ModelConfig:
        return _parse_model_config(raw)


def _asdict(obj: Any) -> Any:
    """`dataclasses.asdict`, leaving out LATER fields at their default and sections that are None and LATER."""
    if not dataclasses.is_dataclass(obj):
        return obj
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("omit_default") and value == f.default:
            continue
        if isinstance(value, dict):
            out[f.name] = {k: _asdict(v) for k, v in value.items()}
        else:
            out[f.name] = _asdict(value)
    return out


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def _vae_section(raw: Any) -> Any:
    """The T-DVAE's section, or (with a `kind`) a converted pipeline's diffusers decoder."""
    if isinstance(raw, dict) and "kind" in raw:
        return parse_vae(raw)
    return _section(VAEConfig, raw, "vae")


def _parse_model_config(raw: Any) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ConfigParseError("config must be a JSON object")
    if raw.get("format") != FORMAT_NAME:
        raise ConfigParseError(f"config 'format' must be '{FORMAT_NAME}', got {raw.get('format')!r}")
    version = raw.get("version")
    if version != FORMAT_VERSION:
        from .errors import UnsupportedVersionError

        raise UnsupportedVersionError(
            f"checkpoint format version {version!r} is not supported (this tool reads version {FORMAT_VERSION})"
        )
    known = {"format", "version", "transformer", "elastic", "ssba", "scheduler", "resolution", "vae", "text_encoder"}
    known.add("text_encoders")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigParseError(f"config has unknown sections: {', '.join(unknown)}")
    for required in ("transformer", "elastic", "ssba", "scheduler"):
        if required not in raw:
            raise ConfigParseError(f"config lacks the '{required}' section")
    resolution = raw.get("resolution", [1024, 1024])
    if (
        not isinstance(resolution, list)
        or len(resolution) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resolution)
    ):
        raise ConfigParseError(f"config 'resolution' must be [height, width], got {resolution!r}")
    cfg = ModelConfig(
        transformer=_section(TransformerConfig, raw["transformer"], "transformer"),
        elastic=_section(ElasticConfig, raw["elastic"], "elastic"),
        ssba=_section(SSBAConfig, raw["ssba"], "ssba"),
        scheduler=_section(SchedulerConfig, raw["scheduler"], "scheduler"),
        resolution=(resolution[0], resolution[1]),
        vae=None if raw.get("vae") is None else _vae_section(raw["vae"]),
        text_encoder=None
        if raw.get("text_encoder") is None
        else _section(TextEncoderConfig, raw["text_encoder"], "text_encoder"),
        text_encoders=None if raw.get("text_encoders") is None else parse_text_encoders(raw["text_encoders"]),
    )
    validate_config(cfg)
    return cfg


def validate_config(cfg: ModelConfig) -> None:
    """Semantic checks that do not depend on a resolution."""
    t = cfg.transformer
    for name in (
        "hidden_size",
        "num_heads",
        "num_blocks",
        "patch_size",
        "in_channels",
        "text_dim",
        "text_len",
        "pooled_dim",
    ):
        if getattr(t, name) <= 0:
            raise ConfigError(f"transformer.{name} must be positive, got {getattr(t, name)}")
    if t.hidden_size % t.num_heads:
        raise ConfigError(f"transformer.hidden_size {t.hidden_size} is not divisible by num_heads {t.num_heads}")
    if (t.hidden_size // 2) % 2:
        raise ConfigError(f"transformer.hidden_size {t.hidden_size} must be a multiple of 4 for 2D sin-cos embeddings")
    if t.prediction not in ("velocity", "sample"):
        raise ConfigError(f"transformer.prediction must be 'velocity' or 'sample', got {t.prediction!r}")
    if t.pos_embed not in ("sincos", "cropped"):
        raise ConfigError(f"transformer.pos_embed must be 'sincos' or 'cropped', got {t.pos_embed!r}")
    if t.pos_embed == "cropped" and t.pos_embed_max_size <= 0:
        raise ConfigError("transformer.pos_embed 'cropped' needs a positive pos_embed_max_size")
    bad = [i for i in t.dual_attention_layers if not 0 <= i < t.num_blocks]
    if bad or len(set(t.dual_attention_layers)) != len(t.dual_attention_layers):
        raise ConfigError(f"transformer.dual_attention_layers must be distinct blocks in 0..{t.num_blocks - 1}")
    ratios = cfg.elastic.compression_ratios
    if not ratios or any(r <= 0 for r in ratios) or len(set(ratios)) != len(ratios):
        raise ConfigError(f"elastic.compression_ratios must be distinct positive integers, got {list(ratios)}")
    if t.pos_embed == "cropped" and ratios != (1,):
        raise ConfigError("a 'cropped' position embedding supports only compression ratio 1")
    if not cfg.elastic.depths:
        raise DepthPlanError("elastic.depths is empty: at least the full depth is needed")
    for name, blocks in cfg.elastic.depths.items():
        if not name or "_" in name:
            raise DepthPlanError(f"depth name {name!r} must be non-empty and contain no '_'")
        if not blocks:
            raise DepthPlanError(f"depth plan '{name}' runs no blocks")
        bad = [b for b in blocks if not 0 <= b < t.num_blocks]
        if bad:
            raise DepthPlanError(f"depth plan '{name}' names block {bad[0]}, outside 0..{t.num_blocks - 1}")
        seen: set[int] = set()
        for b in blocks:
            if b in seen:
                raise DepthPlanError(f"depth plan '{name}' repeats block {b}")
            seen.add(b)
        last = t.num_blocks - 1
        if t.context_pre_only_last and last in blocks and blocks[-1] != last:
            raise DepthPlanError(f"depth plan '{name}' runs block {last} (no text output) before other blocks")
    s = cfg.ssba
    if s.enabled:
        if s.tile <= 0 or s.window < 0:
            raise ConfigError(f"ssba tile must be positive and window non-negative, got {s.tile}, {s.window}")
        if s.shift not in ("odd_blocks", "none"):
            raise ConfigError(f"ssba.shift must be 'odd_blocks' or 'none', got {s.shift!r}")
        if s.text != "global":
            raise ConfigError(f"ssba.text must be 'global', got {s.text!r}")
    if cfg.scheduler.kind not in ("rectified_flow_euler", "flow_match_euler"):
        raise ConfigError(
            f"scheduler.kind must be 'rectified_flow_euler' or 'flow_match_euler', got {cfg.scheduler.kind!r}"
        )
    if cfg.scheduler.steps <= 0 or cfg.scheduler.shift <= 0 or cfg.scheduler.num_train_timesteps <= 0:
        raise ConfigError("scheduler steps, shift and num_train_timesteps must be positive")
    if cfg.vae is not None and not isinstance(cfg.vae, VAEConfig):
        validate_vae(cfg.vae, t.in_channels)
    elif cfg.vae is not None:
        v = cfg.vae
        if v.latent_channels != t.in_channels:
            raise ConfigError(f"vae.latent_channels {v.latent_channels} != transformer.in_channels {t.in_channels}")
        if v.downsample != 2**v.wavelet_levels:
            raise ConfigError(f"vae.downsample {v.downsample} must equal 2 ** wavelet_levels ({v.wavelet_levels})")
        if len(v.decoder_widths) != v.wavelet_levels:
            raise ConfigError(f"vae.decoder_widths needs one width per wavelet level ({v.wavelet_levels})")
    if cfg.text_encoders is not None:
        if cfg.text_encoder is not None:
            raise ConfigError("a config holds either 'text_encoder' or 'text_encoders', not both")
        validate_text_encoders(cfg.text_encoders, t.text_dim, t.text_len, t.pooled_dim)
    if cfg.text_encoder is not None:
        te = cfg.text_encoder
        if tuple(te.vocab[:3]) != ("<pad>", "<start>", "<unk>") or len(te.vocab) < 4:
            raise ConfigError("text_encoder.vocab must start with '<pad>', '<start>', '<unk>' and hold a word")
        if te.width % te.heads:
            raise ConfigError(f"text_encoder.width {te.width} is not divisible by heads {te.heads}")


def check_resolution(cfg: ModelConfig, resolution: tuple[int, int]) -> None:
    """Every ratio and the SSBA tile must divide the token grid at this resolution."""
    h, w = resolution
    f = cfg.vae.downsample if cfg.vae else 8
    if h <= 0 or w <= 0 or h % f or w % f:
        raise GridError(f"resolution {h}x{w} is not a multiple of the VAE downsample factor {f}")
    lh, lw = h // f, w // f
    for r in cfg.elastic.compression_ratios:
        cell = cfg.transformer.patch_size * r
        if lh % cell or lw % cell:
            raise GridError(
                f"compression ratio {r} (cell {cell}x{cell} latents) does not divide the {lh}x{lw} latent "
                f"grid at {h}x{w}"
            )
        if cfg.ssba.enabled:
            gh, gw = lh // cell, lw // cell
            if gh % cfg.ssba.tile or gw % cfg.ssba.tile:
                raise GridError(
                    f"SSBA tile {cfg.ssba.tile} does not divide the {gh}x{gw} token grid of ratio {r} at {h}x{w}"
                )
    t = cfg.transformer
    if t.pos_embed == "cropped":
        gh, gw = lh // t.patch_size, lw // t.patch_size
        if max(gh, gw) > t.pos_embed_max_size:
            raise GridError(f"token grid {gh}x{gw} exceeds the stored position table ({t.pos_embed_max_size})")
