"""Checkpoint format v1: one .safetensors file, the JSON config under `elasticdit.config` in its metadata.

Loading never unpickles: safetensors is parsed directly, and a `.pt`/`.bin` import goes through
`torch.load(weights_only=True)`. Every failure is a named `CheckpointError` (or `ConfigError`) subclass.

A `.safetensors` file is memory-mapped (`safe_open`), never read whole into memory: its tensors are views of the
file's pages (copy-on-write), the header is read on its own and the sha256 is streamed, so loading holds no second
full copy of the weights; `Checkpoint.models()` builds the networks without weights (parameters on the meta device)
and assigns them into the networks (float32 tensors as they are).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file as save_safetensors_file

from .config import METADATA_KEY, ModelConfig, check_resolution
from .errors import (
    CheckpointError,
    ConfigParseError,
    DtypeError,
    MissingConfigError,
    MissingFilesError,
    MissingTensorsError,
    NonFiniteWeightsError,
    NotSafetensorsError,
    ShapeMismatchError,
    TruncatedCheckpointError,
    UnexpectedTensorsError,
    UnsafePickleError,
)
from .model.pipeline import Models, build_models, expected_tensors

FILE_KEY = "elasticdit.file."  # metadata key prefix of a stored text file, e.g. a tokenizer's vocab.json
FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
MAX_HEADER = 100 * 1024 * 1024


@dataclass
class Checkpoint:
    path: Path
    cfg: ModelConfig
    tensors: dict[str, torch.Tensor]
    sha256: str
    files: dict[str, str] = field(default_factory=dict)  # stored text files by `folder/name` (tokenizers)

    def models(self) -> Models:
        """The networks with these weights, in eval mode, float32."""
        from accelerate import init_empty_weights

        # parameters on the meta device until the checkpoint's tensors are assigned: building the networks
        # allocates no weights of its own (buffers, which the code computes, are built as usual)
        with init_empty_weights(include_buffers=False):
            models = build_models(self.cfg)
        models.load_state_dict({k: v.float() for k, v in self.tensors.items()})
        if hasattr(models.text_encoder, "load_tokenizers"):
            models.text_encoder.load_tokenizers(self.files)
        return models.eval()

    def release_pages(self) -> int:
        """Drop the file's pages this process has read from its resident set (`mapped_pages.py`): the tensors
        stay valid and read them again where touched. The bytes of the mappings advised."""
        from .mapped_pages import release_mapped_pages

        return release_mapped_pages(self.path)


def save_checkpoint(
    path: str | Path, cfg: ModelConfig, tensors: dict[str, torch.Tensor], files: dict[str, str] | None = None
) -> str:
    """Write atomically, streamed (no copy of the weights in memory); returns the file's sha256. Tensors and files
    are validated as on load."""
    path = Path(path)
    files = dict(sorted((files or {}).items()))
    tensors = {k: v.detach().contiguous() for k, v in sorted(tensors.items())}
    _check_tensors(cfg, {k: (v.shape, v.dtype) for k, v in tensors.items()})
    _check_finite(tensors)
    _check_files(cfg, files)
    metadata = {METADATA_KEY: cfg.to_json(), **{FILE_KEY + name: text for name, text in files.items()}}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # streamed from the tensors' memory to the file: no serialized copy of the weights in memory (building the
        # bytes first held two more copies, 3x the weights at the peak: 24 GB for the 8 GB paper-scale model)
        save_safetensors_file(tensors, str(tmp), metadata=metadata)
        sha256 = _sha256_of(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256


def load_checkpoint(path: str | Path, resolution: tuple[int, int] | None = None) -> Checkpoint:
    """Read and validate a checkpoint; `resolution` (default: the config's) must suit every ratio and tile."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix in (".pt", ".bin", ".pth"):
        cfg, tensors, data = _read_torch_file(path)
        files: dict[str, str] = {}
        sha256 = hashlib.sha256(data).hexdigest()
    else:
        cfg, tensors, head = _read_safetensors(path)
        files = _stored_files(head, path)
        sha256 = _sha256_of(path)
    _check_tensors(cfg, {k: (v.shape, v.dtype) for k, v in tensors.items()})
    _check_finite(tensors)
    _check_files(cfg, files)
    check_resolution(cfg, resolution or cfg.resolution)
    return Checkpoint(path, cfg, tensors, sha256, files)


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _stored_files(data: bytes, path: Path) -> dict[str, str]:
    metadata = _parse_header(data, len(data), path).get("__metadata__") or {}
    return {k[len(FILE_KEY) :]: v for k, v in metadata.items() if k.startswith(FILE_KEY)}


def _check_files(cfg: ModelConfig, files: dict[str, str]) -> None:
    from .sd3_config import required_files

    missing = [name for name in required_files(cfg.text_encoders) if name not in files]
    if missing:
        raise MissingFilesError(f"checkpoint lacks the stored file '{missing[0]}' its text encoders need")


def _header_length(head: bytes, size: int, path: Path) -> int:
    if len(head) < 8:
        raise NotSafetensorsError(f"{path} is not a safetensors file (only {size} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n == 0 or n > MAX_HEADER:
        raise NotSafetensorsError(f"{path} is not a safetensors file (bad header length)")
    return n


def _parse_header(data: bytes, size: int, path: Path) -> dict:
    n = _header_length(data[:8], size, path)
    if data[8:9] != b"{":
        raise NotSafetensorsError(f"{path} is not a safetensors file (no JSON header)")
    if 8 + n > size:
        raise TruncatedCheckpointError(f"{path} is truncated: its header runs past the end of the file")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8").rstrip(" "))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotSafetensorsError(f"{path} is not a safetensors file (unreadable header: {exc})") from None
    if not isinstance(header, dict):
        raise NotSafetensorsError(f"{path} is not a safetensors file (header is not an object)")
    return header


def _read_safetensors(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], bytes]:
    """The config, the tensors (memory-mapped) and the header's bytes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = _header_length(head, size, path)
        data = head + f.read(n)  # the header alone: the tensors are memory-mapped below
    header = _parse_header(data, size, path)
    body = size - 8 - n
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise NotSafetensorsError(f"{path} is not a safetensors file (bad entry for '{name}')") from None
    if end > body:
        raise TruncatedCheckpointError(f"{path} is truncated: tensor data needs {end} bytes, file holds {body}")
    cfg = _config_from_metadata(header.get("__metadata__"), path)
    for name, info in header.items():
        if name != "__metadata__" and info.get("dtype") not in FLOAT_DTYPES:
            raise DtypeError(f"tensor '{name}' has dtype {info.get('dtype')}; weights must be F32, F16 or BF16")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise NotSafetensorsError(f"{path} is not a valid safetensors file: {str(exc).splitlines()[0]}") from None
    return cfg, tensors, data


def _config_from_metadata(metadata: object, path: Path) -> ModelConfig:
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise MissingConfigError(f"{path} has no '{METADATA_KEY}' entry in its metadata")
    return _parse_config_text(metadata[METADATA_KEY], path)


def _parse_config_text(text: object, path: Path) -> ModelConfig:
    if not isinstance(text, str):
        raise ConfigParseError(f"{path}: '{METADATA_KEY}' must be a JSON string")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigParseError(f"{path}: '{METADATA_KEY}' is not valid JSON ({exc.msg} at char {exc.pos})") from None
    return ModelConfig.from_dict(raw)


def _read_torch_file(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], bytes]:
    """A `.pt`/`.bin` holding a flat dict: tensors by name plus the config JSON under METADATA_KEY."""
    data = path.read_bytes()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise UnsafePickleError(f"{path} was refused: it needs more than weights to load ({first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise NotSafetensorsError(f"{path} is not a readable weights file: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a dict of tensors, got {type(obj).__name__}")
    text = obj.pop(METADATA_KEY, None)
    if text is None:
        raise MissingConfigError(f"{path} has no '{METADATA_KEY}' entry")
    cfg = _parse_config_text(text, path)
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entry '{bad[0]}' is not a tensor")
    for name, t in obj.items():
        if not t.is_floating_point():
            raise DtypeError(f"tensor '{name}' has dtype {t.dtype}; weights must be floating point")
    return cfg, dict(obj), data


def _check_tensors(cfg: ModelConfig, found: dict[str, tuple[torch.Size, torch.dtype]]) -> None:
    expected = expected_tensors(cfg)
    missing = sorted(set(expected) - set(found))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise MissingTensorsError(f"checkpoint lacks {len(missing)} tensors: {', '.join(missing[:3])}{more}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
        raise UnexpectedTensorsError(
            f"checkpoint has {len(unexpected)} tensors the config does not use: {', '.join(unexpected[:3])}{more}"
        )
    for name, shape in expected.items():
        got, dtype = found[name]
        if tuple(got) != shape:
            raise ShapeMismatchError(f"tensor '{name}' has shape {list(got)}, expected {list(shape)}")
        if not dtype.is_floating_point:
            raise DtypeError(f"tensor '{name}' has dtype {dtype}; weights must be floating point")


def _check_finite(tensors: dict[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            kind = "NaN" if torch.isnan(t).any() else "Inf"
            raise NonFiniteWeightsError(f"tensor '{name}' contains {kind}")
