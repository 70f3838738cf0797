"""Fuse diffusers/PEFT LoRA adapters of an SD3 pipeline into a checkpoint's weights, as diffusers'
`load_lora_weights` + `fuse_lora(lora_scale=SCALE)` do: W += SCALE * scaling * (B @ A).

Keys are PEFT's `PREFIX.MODULE.lora_A.weight` / `lora_B.weight` with PREFIX `transformer` (or PEFT's
`base_model.model`), `text_encoder` (CLIP-L) or `text_encoder_2` (CLIP-G). `scaling` is `lora_alpha / r` with
the alpha of the file's `lora_adapter_metadata` (its `alpha_pattern`, `use_rslora`: alpha / sqrt(r)), else of a
`MODULE.alpha` tensor, else diffusers' default: the most common rank (so a module of rank r' gets r_common / r').
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import ConfigError, NotSafetensorsError, UnsupportedModelError


class LoRAError(ConfigError):
    """A LoRA file is malformed, of an unsupported format, or names modules the model lacks."""


PREFIXES = {
    "transformer.": "transformer.",
    "base_model.model.": "transformer.",
    "text_encoder.": "text_encoder.clip_l.",
    "text_encoder_2.": "text_encoder.clip_g.",
}


def parse_spec(spec: str) -> tuple[Path, float]:
    """'FILE.safetensors[:SCALE]'."""
    path, sep, scale = spec.rpartition(":")
    if not sep or not path.endswith(".safetensors"):
        return Path(spec), 1.0
    try:
        return Path(path), float(scale)
    except ValueError:
        raise LoRAError(f"--lora {spec!r}: the scale after ':' is not a number") from None


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix != ".safetensors":
        raise NotSafetensorsError(f"LoRA {path}: only .safetensors adapters are read")
    if not path.is_file():
        raise LoRAError(f"LoRA file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise NotSafetensorsError(f"LoRA {path} is not a readable safetensors file: {exc}") from None


def _metadata(meta: dict[str, str], prefix: str) -> dict:
    text = meta.get("lora_adapter_metadata")
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise LoRAError("the LoRA's lora_adapter_metadata is not valid JSON") from None
    return {k[len(prefix) + 1 :]: v for k, v in doc.items() if k.startswith(prefix + ".")}


def _split(key: str) -> tuple[str, str, str]:
    """(source prefix, module, part) for `PREFIX.MODULE.lora_A.weight`, `.lora_B.weight` or `.alpha`."""
    prefix = next((p for p in PREFIXES if key.startswith(p)), None)
    for part in (".lora_A.weight", ".lora_B.weight", ".alpha"):
        if key.endswith(part) and prefix is not None:
            return prefix, key[len(prefix) : -len(part)], part
    if "lora_down" in key or "lora_up" in key or key.startswith("lora_"):
        raise UnsupportedModelError(f"LoRA key {key!r} is not in diffusers/PEFT format (re-save it with diffusers)")
    raise LoRAError(f"LoRA key {key!r} is not PREFIX.MODULE.lora_A/lora_B.weight (PREFIX transformer, text_encoder)")


def lora_deltas(path: Path, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint tensor name -> `scaling * (B @ A)`, each checked against the weight it changes."""
    tensors, meta = read_lora(path)
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        prefix, module, part = _split(key)
        groups.setdefault((prefix, module), {})[part] = t
    deltas: dict[str, torch.Tensor] = {}
    for prefix in {p for p, _ in groups}:
        own = {m: g for (p, m), g in groups.items() if p == prefix}
        settings = _metadata(meta, "transformer" if prefix == "base_model.model." else prefix.rstrip("."))
        if settings.get("use_dora"):
            raise UnsupportedModelError(f"LoRA {path}: DoRA adapters are not supported")
        ranks = Counter(g[".lora_A.weight"].shape[0] for g in own.values() if ".lora_A.weight" in g)
        common = ranks.most_common(1)[0][0] if ranks else 1
        for module, g in own.items():
            if ".lora_A.weight" not in g or ".lora_B.weight" not in g:
                raise LoRAError(f"LoRA {path}: module {module} lacks lora_A or lora_B")
            target = PREFIXES[prefix] + module + ".weight"
            if target not in weights:
                raise LoRAError(f"LoRA {path} names {prefix}{module}, which this model does not have")
            a, b = g[".lora_A.weight"].float(), g[".lora_B.weight"].float()
            rank = a.shape[0]
            alpha = _alpha(settings, module, g, common)
            scaling = alpha / math.sqrt(rank) if settings.get("use_rslora") else alpha / rank
            shape = weights[target].shape
            fits = b.flatten(1).shape[1] == rank and b.shape[0] == shape[0]
            if not fits or b.shape[0] * a.flatten(1).shape[1] != shape.numel():
                raise LoRAError(
                    f"LoRA {path}: {prefix}{module} has shapes A {list(a.shape)}, B {list(b.shape)}, which do not fit "
                    f"the weight {list(weights[target].shape)}"
                )
            deltas[target] = (b.flatten(1) @ a.flatten(1)).reshape(shape) * scaling
    return deltas


def _alpha(settings: dict, module: str, group: dict[str, torch.Tensor], common: int) -> float:
    for pattern, value in (settings.get("alpha_pattern") or {}).items():
        if module == pattern or module.endswith("." + pattern):
            return float(value)
    if "lora_alpha" in settings:
        return float(settings["lora_alpha"])
    if ".alpha" in group:
        return float(group[".alpha"])
    return float(common)


def fuse_loras(weights: dict[str, torch.Tensor], specs: list[str]) -> dict[str, torch.Tensor]:
    """The weights with every adapter fused in order (in float32, stored back in each weight's dtype); the input
    is not modified."""
    out = dict(weights)
    for spec in specs:
        path, scale = parse_spec(spec)
        for name, delta in lora_deltas(path, out).items():
            out[name] = (out[name].float() + delta * scale).to(out[name].dtype)
    return out
