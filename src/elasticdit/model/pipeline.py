"""All networks of a checkpoint together (text-to-image with them: `generation.CheckpointSource`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig, VAEConfig
from .elastic_dit import ElasticDiT
from .tdvae import TDVAE
from .text_encoder import TextEncoder


@dataclass
class Models:
    cfg: ModelConfig
    transformer: ElasticDiT
    vae: TDVAE | None = None
    text_encoder: TextEncoder | None = None

    def parts(self) -> dict[str, nn.Module]:
        named = {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder}
        return {k: v for k, v in named.items() if v is not None}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.{name}": t for prefix, module in self.parts().items() for name, t in module.state_dict().items()
        }

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for prefix, module in self.parts().items():
            own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            module.load_state_dict(own, strict=True, assign=True)

    def eval(self) -> Models:
        for module in self.parts().values():
            module.eval().requires_grad_(False)
        return self

    def encode_prompt(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """text [1, L, Dt], pooled [1, Dp]; without a text encoder, zeros (an unconditional model)."""
        t = self.cfg.transformer
        if self.text_encoder is None:
            return torch.zeros(1, t.text_len, t.text_dim), torch.zeros(1, t.pooled_dim)
        return self.text_encoder(self.text_encoder.tokenize(prompt))


def build_models(cfg: ModelConfig, device: str | torch.device = "cpu") -> Models:
    with torch.device(device):
        t = cfg.transformer
        text_encoder = None
        if cfg.text_encoder is not None:
            text_encoder = TextEncoder(cfg.text_encoder, t.text_len, t.text_dim, t.pooled_dim)
        elif cfg.text_encoders is not None:
            from .sd3_text import SD3TextEncoders

            text_encoder = SD3TextEncoders(cfg.text_encoders, t.text_dim)
        vae = None
        if isinstance(cfg.vae, VAEConfig):
            vae = TDVAE(cfg.vae)
        elif cfg.vae is not None:
            from .diffusers_vae import DiffusersVAE

            vae = DiffusersVAE(cfg.vae)
        return Models(cfg=cfg, transformer=ElasticDiT(cfg), vae=vae, text_encoder=text_encoder)


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name a checkpoint of this config holds, with its shape (built on the meta device)."""
    return {name: tuple(t.shape) for name, t in build_models(cfg, "meta").state_dict().items()}


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
    # the parameters themselves (the networks are dropped on return), so the weights are held once, not twice (8 GB
    # at paper scale); a tensor sharing storage with an earlier one is cloned, as safetensors stores each once
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.detach().clone() if ptr in seen else v.detach()
        seen.add(ptr)
    return out
