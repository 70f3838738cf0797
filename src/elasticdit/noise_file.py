"""`generate --noise FILE`: the initial latent from a file instead of a seed, so one run can be reproduced across
runtimes (the diffusers pipeline's `latents=`, the native runner's `--noise`).

A `.npy` (read without pickle) or a `.safetensors` holding one tensor; float32, shaped as the latent the source
samples ([1, C, h, w]).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import ElasticDiTError


class NoiseFileError(ElasticDiTError):
    """The noise file cannot be read, or is not one float32 tensor of the latent's shape."""


def read_noise(path: str | Path) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise NoiseFileError(f"{path} does not exist (expected a .npy or .safetensors noise file)")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise NoiseFileError(f"{path} is not a readable .npy array: {str(exc).splitlines()[0]}") from None
    elif path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise NoiseFileError(f"{path} is not a readable safetensors file: {exc}") from None
        if len(tensors) != 1:
            raise NoiseFileError(f"{path} holds {len(tensors)} tensors; a noise file holds exactly one")
        (array,) = tensors.values()
    else:
        raise NoiseFileError(f"{path}: a noise file is a .npy or a .safetensors, not {path.suffix or 'no suffix'!r}")
    if array.dtype != np.float32:
        raise NoiseFileError(f"{path} holds {array.dtype} values; the noise must be float32")
    return torch.from_numpy(np.ascontiguousarray(array))


def check_noise_shape(noise: torch.Tensor, shape: Sequence[int], what: str = "the noise") -> torch.Tensor:
    if list(noise.shape) != list(shape):
        raise NoiseFileError(f"{what} has shape {list(noise.shape)}; this source samples latents of {list(shape)}")
    return noise
