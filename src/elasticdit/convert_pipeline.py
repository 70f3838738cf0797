"""Import a whole `StableDiffusion3Pipeline.save_pretrained` folder (SD3, SD3.5) as one v1 checkpoint.

Components: transformer (as convert_sd3), the VAE decoder (`AutoencoderKL`, or an `AutoencoderTiny` such as
TAESD3 given separately), the two CLIP text encoders with projection, optionally T5, the tokenizers' files and
the FlowMatchEulerDiscreteScheduler's settings. Only safetensors are read; diffusers and transformers are not
needed (their config.json files are read as JSON). Everything is checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .config import ModelConfig, SchedulerConfig, validate_config
from .errors import CheckpointError, ConfigError, NotSafetensorsError, UnsupportedModelError
from .sd3_config import (
    AutoencoderKLConfig,
    AutoencoderTinyConfig,
    CLIPTextConfig,
    SD3TextConfig,
    T5EncoderConfig,
    TokenizerConfig,
)


class MissingComponentError(CheckpointError):
    """A pipeline folder lacks a component (or its config or weights) the conversion needs."""


CLIP_SPECIALS = ("bos_token", "eos_token", "unk_token", "pad_token")
SCHEDULER_REFUSED = ("use_dynamic_shifting", "invert_sigmas", "shift_terminal", "use_karras_sigmas")
SCHEDULER_REFUSED += ("use_exponential_sigmas", "use_beta_sigmas", "stochastic_sampling")


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingComponentError(f"{path.parent} has no {path.name} ({what})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return raw


def read_weights(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    """`{stem}.safetensors`, or the shards its `.safetensors.index.json` names; a pickle is refused."""
    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    try:
        if single.is_file():
            return load_file(single)
        if index.is_file():
            weight_map = read_json(index, "shard index").get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index} has no weight_map")
            tensors: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise MissingComponentError(f"{index} names the shard {shard}, which is missing")
                tensors.update(load_file(folder / shard))
            return tensors
    except (SafetensorError, OSError) as exc:
        raise NotSafetensorsError(f"cannot read the weights in {folder}: {str(exc).splitlines()[0]}") from None
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise NotSafetensorsError(f"{folder} holds only pickle weights (.bin/.pt); only safetensors are read")
    raise MissingComponentError(f"{folder} holds no {stem}.safetensors")


def component_class(index: dict[str, Any], name: str) -> str | None:
    entry = index.get(name)
    if not isinstance(entry, list) or len(entry) != 2 or entry[1] is None:
        return None
    return str(entry[1])


def expect_class(index: dict[str, Any], name: str, allowed: tuple[str, ...], required: bool = True) -> bool:
    cls = component_class(index, name)
    if cls is None:
        if required:
            raise MissingComponentError(f"the pipeline has no {name} (model_index.json)")
        return False
    if cls not in allowed:
        raise UnsupportedModelError(f"{name} is a {cls}; expected {' or '.join(allowed)}")
    return True


# ------------------------------------------------------------------------------------------------ VAE


def autoencoder_kl(folder: Path) -> tuple[AutoencoderKLConfig, dict[str, torch.Tensor]]:
    raw = read_json(folder / "config.json", "the VAE config")
    if raw.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise UnsupportedModelError(f"{folder} holds a {raw['_class_name']}, not an AutoencoderKL")
    if any(t != "UpDecoderBlock2D" for t in raw.get("up_block_types", ["UpDecoderBlock2D"])):
        raise UnsupportedModelError(f"{folder}: only UpDecoderBlock2D decoder blocks are supported")
    if raw.get("act_fn", "silu") != "silu" or raw.get("out_channels", 3) != 3:
        raise UnsupportedModelError(f"{folder}: the decoder must use SiLU and write 3 channels")
    if raw.get("latents_mean") is not None or raw.get("latents_std") is not None:
        raise UnsupportedModelError(f"{folder}: latents_mean/latents_std normalisation is not supported")
    widths = tuple(raw.get("block_out_channels", (64,)))
    cfg = AutoencoderKLConfig(
        latent_channels=raw.get("latent_channels", 4),
        downsample=2 ** (len(widths) - 1),
        scaling_factor=float(raw.get("scaling_factor", 0.18215)),
        shift_factor=float(raw.get("shift_factor") or 0.0),
        block_out_channels=widths,
        layers_per_block=raw.get("layers_per_block", 1),
        norm_num_groups=raw.get("norm_num_groups", 32),
        mid_block_add_attention=bool(raw.get("mid_block_add_attention", True)),
        use_post_quant_conv=bool(raw.get("use_post_quant_conv", True)),
    )
    keep = ("decoder.", "post_quant_conv.") if cfg.use_post_quant_conv else ("decoder.",)
    weights = read_weights(folder, "diffusion_pytorch_model")
    return cfg, {k: v for k, v in weights.items() if k.startswith(keep)}


def autoencoder_tiny(folder: Path) -> tuple[AutoencoderTinyConfig, dict[str, torch.Tensor]]:
    raw = read_json(folder / "config.json", "the tiny VAE config")
    if raw.get("_class_name", "AutoencoderTiny") != "AutoencoderTiny":
        raise UnsupportedModelError(f"{folder} holds a {raw['_class_name']}, not an AutoencoderTiny")
    if raw.get("act_fn", "relu") != "relu" or raw.get("upsample_fn", "nearest") != "nearest":
        raise UnsupportedModelError(f"{folder}: only ReLU and nearest upsampling are supported")
    if raw.get("out_channels", 3) != 3:
        raise UnsupportedModelError(f"{folder}: the decoder must write 3 channels")
    blocks = tuple(raw.get("num_decoder_blocks", (3, 3, 3, 1)))
    factor = raw.get("upsampling_scaling_factor", 2)
    cfg = AutoencoderTinyConfig(
        latent_channels=raw.get("latent_channels", 4),
        downsample=factor ** (len(blocks) - 1),
        scaling_factor=float(raw.get("scaling_factor", 1.0)),
        shift_factor=float(raw.get("shift_factor") or 0.0),
        block_out_channels=tuple(raw.get("decoder_block_out_channels", (64, 64, 64, 64))),
        num_blocks=blocks,
        upsampling_scaling_factor=factor,
    )
    weights = read_weights(folder, "diffusion_pytorch_model")
    return cfg, {k: v for k, v in weights.items() if k.startswith("decoder.")}


# ------------------------------------------------------------------------------------------------ text


def clip_text(folder: Path) -> tuple[CLIPTextConfig, dict[str, torch.Tensor]]:
    raw = read_json(folder / "config.json", "the CLIP text encoder config")
    cfg = CLIPTextConfig(
        vocab_size=raw.get("vocab_size", 49408),
        hidden_size=raw.get("hidden_size", 512),
        intermediate_size=raw.get("intermediate_size", 2048),
        num_layers=raw.get("num_hidden_layers", 12),
        num_heads=raw.get("num_attention_heads", 8),
        projection_dim=raw.get("projection_dim", 512),
        max_positions=raw.get("max_position_embeddings", 77),
        hidden_act=raw.get("hidden_act", "quick_gelu"),
        layer_norm_eps=float(raw.get("layer_norm_eps", 1e-5)),
        eos_token_id=raw.get("eos_token_id", 2),
    )
    weights = read_weights(folder, "model")
    weights.pop("text_model.embeddings.position_ids", None)
    return cfg, weights


def t5_encoder(folder: Path) -> tuple[T5EncoderConfig, dict[str, torch.Tensor]]:
    raw = read_json(folder / "config.json", "the T5 encoder config")
    cfg = T5EncoderConfig(
        vocab_size=raw.get("vocab_size", 32128),
        d_model=raw.get("d_model", 512),
        d_kv=raw.get("d_kv", 64),
        d_ff=raw.get("d_ff", 2048),
        num_layers=raw.get("num_layers", 6),
        num_heads=raw.get("num_heads", 8),
        relative_attention_num_buckets=raw.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=raw.get("relative_attention_max_distance", 128),
        feed_forward_proj=raw.get("feed_forward_proj", "relu"),
        layer_norm_epsilon=float(raw.get("layer_norm_epsilon", 1e-6)),
    )
    weights = read_weights(folder, "model")
    tied = weights.pop("encoder.embed_tokens.weight", None)
    if "shared.weight" not in weights and tied is not None:
        weights["shared.weight"] = tied
    return cfg, weights


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def clip_tokenizer_files(folder: Path, name: str) -> tuple[TokenizerConfig, dict[str, str]]:
    """vocab.json + merges.txt (transformers 4's files) or the BPE inside tokenizer.json (transformers 5's)."""
    settings = read_json(folder / "tokenizer_config.json", "the tokenizer config")
    if (folder / "special_tokens_map.json").is_file():
        settings = {**read_json(folder / "special_tokens_map.json", "special tokens"), **settings}
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab, merges = (folder / "vocab.json").read_text(), (folder / "merges.txt").read_text()
        added = [_token_text(v) for v in (settings.get("added_tokens_decoder") or {}).values()]
    elif (folder / "tokenizer.json").is_file():
        doc = read_json(folder / "tokenizer.json", "the tokenizer")
        model = doc.get("model") or {}
        if model.get("type") != "BPE":
            raise UnsupportedModelError(f"{folder}/tokenizer.json is not a BPE tokenizer")
        vocab = json.dumps(model["vocab"], ensure_ascii=False)
        pairs = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in pairs)
        added = [t.get("content") for t in doc.get("added_tokens") or []]
    else:
        raise MissingComponentError(f"{folder} holds neither vocab.json + merges.txt nor tokenizer.json")
    specials = {key: _token_text(settings.get(key)) or "<|endoftext|>" for key in CLIP_SPECIALS}
    specials["bos_token"] = _token_text(settings.get("bos_token")) or "<|startoftext|>"
    extra = tuple(sorted({t for t in added if t and t not in specials.values()}))
    length = int(settings.get("model_max_length", 77))
    tok = TokenizerConfig(files=name, kind="clip_bpe", max_length=length, extra_tokens=extra, **specials)
    return tok, {f"{name}/vocab.json": vocab, f"{name}/merges.txt": merges}


def t5_tokenizer_files(folder: Path, name: str, length: int) -> tuple[TokenizerConfig, dict[str, str]]:
    """tokenizer.json, or one made from spiece.model by transformers at conversion time."""
    settings = read_json(folder / "tokenizer_config.json", "the T5 tokenizer config")
    if (folder / "tokenizer.json").is_file():
        text = (folder / "tokenizer.json").read_text()
    else:
        try:
            from transformers import T5TokenizerFast
        except ImportError:
            raise MissingComponentError(
                f"{folder} has no tokenizer.json; making one from spiece.model needs transformers at conversion"
            ) from None
        text = T5TokenizerFast.from_pretrained(str(folder)).backend_tokenizer.to_str()
    pad = _token_text(settings.get("pad_token")) or "<pad>"
    eos = _token_text(settings.get("eos_token")) or "</s>"
    unk = _token_text(settings.get("unk_token")) or "<unk>"
    tok = TokenizerConfig(
        files=name, kind="t5", max_length=length, bos_token="", eos_token=eos, unk_token=unk, pad_token=pad
    )
    return tok, {f"{name}/tokenizer.json": text}


# ------------------------------------------------------------------------------------------------ scheduler


def scheduler_config(folder: Path) -> SchedulerConfig:
    raw = read_json(folder / "scheduler_config.json", "the scheduler config")
    cls = raw.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    if cls != "FlowMatchEulerDiscreteScheduler":
        raise UnsupportedModelError(f"the scheduler is a {cls}; only FlowMatchEulerDiscreteScheduler is reproduced")
    refused = [key for key in SCHEDULER_REFUSED if raw.get(key)]
    if refused:
        raise UnsupportedModelError(f"scheduler option {refused[0]} changes the sigmas and is not reproduced")
    # the pipeline's defaults: 28 steps, guidance 7.0
    return SchedulerConfig(
        kind="flow_match_euler",
        shift=float(raw.get("shift", 1.0)),
        steps=28,
        guidance_scale=7.0,
        num_train_timesteps=int(raw.get("num_train_timesteps", 1000)),
    )


# ------------------------------------------------------------------------------------------------ pipeline


def convert_pipeline_parts(
    src: Path, transformer_cfg: ModelConfig, t5: str, decoder: tuple[str, Path] | None
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, str]]:
    """(config, tensors with prefixes, stored files) of every component but the transformer's tensors."""
    index = read_json(src / "model_index.json", "the pipeline index")
    cls = index.get("_class_name")
    if cls != "StableDiffusion3Pipeline":
        raise UnsupportedModelError(f"{src} holds a {cls} pipeline, not a StableDiffusion3Pipeline")
    clip_classes = ("CLIPTextModelWithProjection",)
    clip_tokenizers = ("CLIPTokenizer", "CLIPTokenizerFast")
    for name, allowed in (("text_encoder", clip_classes), ("text_encoder_2", clip_classes)):
        expect_class(index, name, allowed)
    for name in ("tokenizer", "tokenizer_2"):
        expect_class(index, name, clip_tokenizers)
    expect_class(index, "scheduler", ("FlowMatchEulerDiscreteScheduler",))
    has_t5 = expect_class(index, "text_encoder_3", ("T5EncoderModel",), required=False)
    if t5 not in ("keep", "drop"):
        raise ConfigError(f"--t5 must be 'keep' or 'drop', got {t5!r}")
    if t5 == "keep" and not has_t5:
        raise MissingComponentError("--t5 keep: the pipeline has no text_encoder_3 (T5)")

    tensors: dict[str, torch.Tensor] = {}
    if decoder is None:
        expect_class(index, "vae", ("AutoencoderKL",))
        vae_cfg, vae = autoencoder_kl(src / "vae")
    else:
        kind, folder = decoder
        if kind != "taesd3":
            raise ConfigError(f"--decoder must be 'taesd3 DIR', got {kind!r}")
        vae_cfg, vae = autoencoder_tiny(Path(folder))
    tensors.update({f"vae.{k}": v for k, v in vae.items()})

    clip_l, weights_l = clip_text(src / "text_encoder")
    clip_g, weights_g = clip_text(src / "text_encoder_2")
    tensors.update({f"text_encoder.clip_l.{k}": v for k, v in weights_l.items()})
    tensors.update({f"text_encoder.clip_g.{k}": v for k, v in weights_g.items()})
    tok_l, files = clip_tokenizer_files(src / "tokenizer", "tokenizer")
    tok_g, files_g = clip_tokenizer_files(src / "tokenizer_2", "tokenizer_2")
    files.update(files_g)
    # the pipeline pads and truncates both CLIP prompts to the first tokenizer's length
    tok_g = dataclasses.replace(tok_g, max_length=tok_l.max_length)
    t = transformer_cfg.transformer
    t5_len = t.text_len - tok_l.max_length
    t5_cfg = tok_t5 = None
    if t5 == "keep":
        expect_class(index, "tokenizer_3", ("T5TokenizerFast", "T5Tokenizer"))
        t5_cfg, weights_t5 = t5_encoder(src / "text_encoder_3")
        tensors.update({f"text_encoder.t5.{k}": v for k, v in weights_t5.items()})
        tok_t5, files_t5 = t5_tokenizer_files(src / "tokenizer_3", "tokenizer_3", t5_len)
        files.update(files_t5)
    text = SD3TextConfig(clip_l, clip_g, tok_l, tok_g, t5_cfg, tok_t5, t5_len)
    cfg = dataclasses.replace(
        transformer_cfg,
        vae=vae_cfg,
        text_encoders=text,
        scheduler=scheduler_config(src / "scheduler"),
        resolution=tuple(r // 8 * vae_cfg.downsample for r in transformer_cfg.resolution),
    )
    validate_config(cfg)
    return cfg, {k: keep_float(v) for k, v in tensors.items()}, files


def keep_float(t: torch.Tensor) -> torch.Tensor:
    """F32/F16/BF16 weights keep their dtype (a checkpoint stores them as they came); others become float32."""
    return t if t.dtype in (torch.float32, torch.float16, torch.bfloat16) else t.float()
