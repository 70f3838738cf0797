"""Import a diffusers SD3-family model as a v1 checkpoint (diffusers not needed).

A bare `SD3Transformer2DModel.save_pretrained` folder gives the transformer alone; a whole
`StableDiffusion3Pipeline.save_pretrained` folder (with model_index.json) adds the VAE decoder, the text encoders,
their tokenizers' files and the scheduler (convert_pipeline.py). The transformer has compression ratio 1, the
full depth plus any asked depth plans, SSBA off and SD3's learned (cropped) position table.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import save_checkpoint
from .config import (
    ElasticConfig,
    ModelConfig,
    SchedulerConfig,
    SSBAConfig,
    TransformerConfig,
    validate_config,
)
from .convert_pipeline import convert_pipeline_parts, keep_float, read_weights
from .errors import CheckpointError, ConfigError, DepthPlanError, UnsupportedModelError

SD3_TEXT_LEN = 333  # 77 CLIP tokens + 256 T5 tokens in SD3's joint text sequence
SUPPORTED_KEYS = {
    "sample_size",
    "patch_size",
    "in_channels",
    "num_layers",
    "attention_head_dim",
    "num_attention_heads",
    "joint_attention_dim",
    "caption_projection_dim",
    "pooled_projection_dim",
    "out_channels",
    "pos_embed_max_size",
    "dual_attention_layers",
    "qk_norm",
}


def parse_depth(spec: str, num_blocks: int) -> tuple[str, tuple[int, ...]]:
    """'12=0-5,18-23' -> ('12', (0, ..., 5, 18, ..., 23))."""
    name, sep, body = spec.partition("=")
    if not sep or not name or not body:
        raise DepthPlanError(f"depth plan '{spec}' must look like NAME=0-5,8,10-11")
    blocks: list[int] = []
    try:
        for part in body.split(","):
            lo, dash, hi = part.partition("-")
            blocks += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    except ValueError:
        raise DepthPlanError(f"depth plan '{spec}' has a part that is not a block number or range") from None
    return name.strip(), tuple(blocks)


def sd3_config(raw: dict, depths: list[str], text_len: int) -> ModelConfig:
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in SUPPORTED_KEYS)
    if unknown:
        raise UnsupportedModelError(f"SD3 config keys this tool cannot represent: {', '.join(unknown)}")
    qk_norm = raw.get("qk_norm")
    if qk_norm not in (None, "rms_norm"):
        raise UnsupportedModelError(f"qk_norm '{qk_norm}' is not supported (only none or rms_norm)")
    heads, head_dim = raw.get("num_attention_heads", 18), raw.get("attention_head_dim", 64)
    hidden = heads * head_dim
    if raw.get("caption_projection_dim", hidden) != hidden:
        raise UnsupportedModelError("caption_projection_dim must equal the transformer width for joint attention")
    in_channels = raw.get("in_channels", 16)
    if raw.get("out_channels", in_channels) not in (None, in_channels):
        raise UnsupportedModelError("out_channels must equal in_channels")
    num_blocks = raw.get("num_layers", 18)
    plans = {str(num_blocks): tuple(range(num_blocks))}
    for spec in depths:
        name, blocks = parse_depth(spec, num_blocks)
        plans[name] = blocks
    sample = raw.get("sample_size", 128)
    cfg = ModelConfig(
        transformer=TransformerConfig(
            hidden_size=hidden,
            num_heads=heads,
            num_blocks=num_blocks,
            mlp_ratio=4.0,
            patch_size=raw.get("patch_size", 2),
            in_channels=in_channels,
            text_dim=raw.get("joint_attention_dim", 4096),
            text_len=text_len,
            pooled_dim=raw.get("pooled_projection_dim", 2048),
            qk_norm=qk_norm == "rms_norm",
            pos_embed="cropped",
            pos_embed_max_size=raw.get("pos_embed_max_size", 96),
            context_pre_only_last=True,
            dual_attention_layers=tuple(raw.get("dual_attention_layers") or ()),
        ),
        elastic=ElasticConfig(compression_ratios=(1,), depths=plans),
        ssba=SSBAConfig(enabled=False),
        scheduler=SchedulerConfig(shift=3.0, steps=28, guidance_scale=7.0),
        resolution=(sample * 8, sample * 8),
    )
    validate_config(cfg)
    return cfg


def convert_sd3(
    src: str | Path,
    out: str | Path,
    depths: list[str] | None = None,
    text_len: int = SD3_TEXT_LEN,
    t5: str = "drop",
    decoder: tuple[str, Path] | None = None,
    loras: list[str] | None = None,
) -> ModelConfig:
    """Write the checkpoint; `loras` ('FILE[:SCALE]') are fused into the weights first."""
    from .lora import fuse_loras

    src = Path(src)
    pipeline = (src / "model_index.json").is_file()
    cfg, tensors = _transformer(src / "transformer" if pipeline else src, depths or [], text_len)
    files: dict[str, str] = {}
    if pipeline:
        cfg, parts, files = convert_pipeline_parts(src, cfg, t5, decoder)
        tensors.update(parts)
    elif decoder is not None:
        raise CheckpointError("--decoder needs a whole pipeline folder (with model_index.json)")
    tensors = fuse_loras(tensors, loras or [])
    save_checkpoint(out, cfg, tensors, files)
    return cfg


def _transformer(src: Path, depths: list[str], text_len: int) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    config_path = src / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{src} has no config.json (expected a save_pretrained folder)")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config_path} is not valid JSON: {exc.msg}") from None
    if raw.get("_class_name", "SD3Transformer2DModel") != "SD3Transformer2DModel":
        raise UnsupportedModelError(f"{src} holds a {raw['_class_name']}, not an SD3Transformer2DModel")
    cfg = sd3_config(raw, depths, text_len)
    weights = read_weights(src, "diffusion_pytorch_model")
    return cfg, {f"transformer.{k}": keep_float(v) for k, v in weights.items()}
