"""Config sections of a converted SD3 / SD3.5 pipeline: the diffusers VAE decoders and the text encoders.

`vae` with `kind` "autoencoder_kl" (diffusers `AutoencoderKL`) or "autoencoder_tiny" (`AutoencoderTiny`, e.g.
TAESD3) instead of the T-DVAE; `text_encoders`: two CLIP text models with projection, an optional T5 encoder,
and their tokenizers. Field names follow the transformers / diffusers configs they come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config_sections import section as _section
from .errors import ConfigError, ConfigParseError


@dataclass(frozen=True)
class AutoencoderKLConfig:
    kind: str = "autoencoder_kl"
    latent_channels: int = 16
    downsample: int = 8  # 2 ** (len(block_out_channels) - 1)
    scaling_factor: float = 1.5305
    shift_factor: float = 0.0609
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    use_post_quant_conv: bool = False


@dataclass(frozen=True)
class AutoencoderTinyConfig:
    kind: str = "autoencoder_tiny"
    latent_channels: int = 16
    downsample: int = 8  # upsampling_scaling_factor ** (len(num_blocks) - 1)
    scaling_factor: float = 1.5305
    shift_factor: float = 0.0609
    block_out_channels: tuple[int, ...] = (64, 64, 64, 64)
    num_blocks: tuple[int, ...] = (3, 3, 3, 1)
    upsampling_scaling_factor: int = 2


@dataclass(frozen=True)
class TokenizerConfig:
    """`files`: the folder name of the files the checkpoint stores (`vocab.json` + `merges.txt` for "clip_bpe",
    `tokenizer.json` for "t5"); the special tokens by their text."""

    files: str
    kind: str = "clip_bpe"
    max_length: int = 77
    bos_token: str = "<|startoftext|>"
    eos_token: str = "<|endoftext|>"
    unk_token: str = "<|endoftext|>"
    pad_token: str = "<|endoftext|>"
    extra_tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    projection_dim: int
    max_positions: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 2  # the model config's: 2 means transformers' legacy pooling at the largest id


@dataclass(frozen=True)
class T5EncoderConfig:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    feed_forward_proj: str = "gated-gelu"
    layer_norm_epsilon: float = 1e-6


@dataclass(frozen=True)
class SD3TextConfig:
    """The joint text: [CLIP-L | CLIP-G] penultimate states side by side, zero-padded to the transformer's
    text_dim, then the T5 states (or zeros when `t5` is None) along the sequence; pooled: both projections."""

    clip_l: CLIPTextConfig
    clip_g: CLIPTextConfig
    tokenizer_l: TokenizerConfig
    tokenizer_g: TokenizerConfig
    t5: T5EncoderConfig | None = None
    tokenizer_t5: TokenizerConfig | None = None
    t5_len: int = 256


def tokenizer_files(tok: TokenizerConfig) -> tuple[str, ...]:
    """The stored files a tokenizer needs, as `folder/name`."""
    names = ("vocab.json", "merges.txt") if tok.kind == "clip_bpe" else ("tokenizer.json",)
    return tuple(f"{tok.files}/{name}" for name in names)


def required_files(te: SD3TextConfig | None) -> tuple[str, ...]:
    if te is None:
        return ()
    toks = [te.tokenizer_l, te.tokenizer_g] + ([te.tokenizer_t5] if te.tokenizer_t5 is not None else [])
    return tuple(sorted({name for tok in toks for name in tokenizer_files(tok)}))


VAE_KINDS: dict[str, type] = {"autoencoder_kl": AutoencoderKLConfig, "autoencoder_tiny": AutoencoderTinyConfig}


def parse_vae(raw: Any) -> Any:
    """A `vae` section with a `kind` (a diffusers decoder); without one it is the T-DVAE's (config.py)."""
    kind = raw.get("kind")
    if kind not in VAE_KINDS:
        raise ConfigParseError(f"config key 'vae.kind' must be one of {', '.join(VAE_KINDS)}, got {kind!r}")
    return _section(VAE_KINDS[kind], raw, "vae")


def parse_text_encoders(raw: Any) -> SD3TextConfig:
    if not isinstance(raw, dict):
        raise ConfigParseError("config section 'text_encoders' must be an object")
    known = {"clip_l", "clip_g", "tokenizer_l", "tokenizer_g", "t5", "tokenizer_t5", "t5_len"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigParseError(f"config section 'text_encoders' has unknown keys: {', '.join(unknown)}")
    for key in ("clip_l", "clip_g", "tokenizer_l", "tokenizer_g"):
        if key not in raw:
            raise ConfigParseError(f"config section 'text_encoders' lacks '{key}'")
    t5_len = raw.get("t5_len", 256)
    if isinstance(t5_len, bool) or not isinstance(t5_len, int):
        raise ConfigParseError(f"config key 'text_encoders.t5_len' must be an integer, got {t5_len!r}")
    return SD3TextConfig(
        clip_l=_section(CLIPTextConfig, raw["clip_l"], "text_encoders.clip_l"),
        clip_g=_section(CLIPTextConfig, raw["clip_g"], "text_encoders.clip_g"),
        tokenizer_l=_section(TokenizerConfig, raw["tokenizer_l"], "text_encoders.tokenizer_l"),
        tokenizer_g=_section(TokenizerConfig, raw["tokenizer_g"], "text_encoders.tokenizer_g"),
        t5=None if raw.get("t5") is None else _section(T5EncoderConfig, raw["t5"], "text_encoders.t5"),
        tokenizer_t5=None
        if raw.get("tokenizer_t5") is None
        else _section(TokenizerConfig, raw["tokenizer_t5"], "text_encoders.tokenizer_t5"),
        t5_len=t5_len,
    )


def validate_vae(v: Any, in_channels: int) -> None:
    if v.latent_channels != in_channels:
        raise ConfigError(f"vae.latent_channels {v.latent_channels} != transformer.in_channels {in_channels}")
    if v.scaling_factor == 0:
        raise ConfigError("vae.scaling_factor must not be 0")
    if isinstance(v, AutoencoderKLConfig):
        if not v.block_out_channels or v.downsample != 2 ** (len(v.block_out_channels) - 1):
            raise ConfigError("vae.downsample must be 2 ** (len(block_out_channels) - 1)")
        if v.norm_num_groups <= 0 or any(c % v.norm_num_groups for c in v.block_out_channels):
            raise ConfigError(f"vae.norm_num_groups {v.norm_num_groups} must divide every block width")
    else:
        if len(v.block_out_channels) != len(v.num_blocks) or not v.num_blocks:
            raise ConfigError("vae.block_out_channels and vae.num_blocks need one entry per decoder stage")
        if v.downsample != v.upsampling_scaling_factor ** (len(v.num_blocks) - 1):
            raise ConfigError("vae.downsample must be upsampling_scaling_factor ** (stages - 1)")


def validate_text_encoders(te: SD3TextConfig, text_dim: int, text_len: int, pooled_dim: int) -> None:
    """The widths and lengths must compose into the transformer's text input exactly."""
    from .errors import UnsupportedModelError

    for name, c in (("clip_l", te.clip_l), ("clip_g", te.clip_g)):
        if c.hidden_size % c.num_heads:
            raise ConfigError(f"text_encoders.{name}: hidden_size {c.hidden_size} is not divisible by num_heads")
        if c.hidden_act not in ("quick_gelu", "gelu"):
            raise UnsupportedModelError(f"text_encoders.{name}: activation {c.hidden_act!r} is not supported")
    for name, tok, clip in (("tokenizer_l", te.tokenizer_l, te.clip_l), ("tokenizer_g", te.tokenizer_g, te.clip_g)):
        if tok.kind != "clip_bpe" or tok.max_length != te.tokenizer_l.max_length or tok.max_length > clip.max_positions:
            raise ConfigError(f"text_encoders.{name} must be a clip_bpe tokenizer of one length <= max_positions")
    clip_len = te.tokenizer_l.max_length
    clip_width = te.clip_l.hidden_size + te.clip_g.hidden_size
    if clip_width > text_dim:
        raise ConfigError(f"the CLIP states ({clip_width} wide) do not fit the transformer's text_dim {text_dim}")
    if te.clip_l.projection_dim + te.clip_g.projection_dim != pooled_dim:
        raise ConfigError(
            f"CLIP projections {te.clip_l.projection_dim} + {te.clip_g.projection_dim} != pooled_dim {pooled_dim}"
        )
    if clip_len + te.t5_len != text_len:
        raise ConfigError(f"CLIP length {clip_len} + T5 length {te.t5_len} != transformer.text_len {text_len}")
    if te.t5 is not None:
        if te.t5.d_model != text_dim:
            raise ConfigError(f"text_encoders.t5.d_model {te.t5.d_model} != transformer.text_dim {text_dim}")
        if te.t5.feed_forward_proj not in ("gated-gelu", "relu"):
            raise UnsupportedModelError(f"T5 feed_forward_proj {te.t5.feed_forward_proj!r} is not supported")
        if te.tokenizer_t5 is None or te.tokenizer_t5.kind != "t5" or te.tokenizer_t5.max_length != te.t5_len:
            raise ConfigError("text_encoders.t5 needs tokenizer_t5 of kind 't5' and max_length t5_len")
