"""All networks of a checkpoint together, and text-to-image with the PyTorch reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from ..operating_points import OperatingPoint
from .elastic_dit import ElasticDiT
from .sampler import sample
from .tdvae import TDVAE
from .text_encoder import TextEncoder

PREFIXES = ("transformer.", "vae.decoder.", "vae.encoder.", "text_encoder.")


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

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        point: OperatingPoint,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        resolution: tuple[int, int] | None = None,
        attention: str = "masked",
    ) -> torch.Tensor:
        """Image [1, 3, H, W] in [0, 1] from the PyTorch reference."""
        if self.vae is None:
            raise ValueError("this checkpoint has no VAE decoder, so it cannot make images")
        sched = self.cfg.scheduler
        steps = steps or sched.steps
        guidance = sched.guidance_scale if guidance is None else guidance
        text, pooled = self.encode_prompt(prompt)
        uncond_text, uncond_pooled = self.encode_prompt("")
        lh, lw = self.cfg.latent_size(resolution)
        noise = torch.randn(1, self.cfg.transformer.in_channels, lh, lw, generator=torch.Generator().manual_seed(seed))
        net = self.transformer.operating_point(point, resolution, attention)
        latent = sample(net, noise, text, pooled, steps, sched.shift, guidance, uncond_text, uncond_pooled)
        return self.vae.decode(self.vae.unscale(latent))


def build_models(cfg: ModelConfig, device: str | torch.device = "cpu") -> Models:
    with torch.device(device):
        t = cfg.transformer
        text_encoder = None
        if cfg.text_encoder is not None:
            text_encoder = TextEncoder(cfg.text_encoder, t.text_len, t.text_dim, t.pooled_dim)
        return Models(
            cfg=cfg,
            transformer=ElasticDiT(cfg),
            vae=TDVAE(cfg.vae) if cfg.vae is not None else None,
            text_encoder=text_encoder,
        )


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name a checkpoint of this config holds, with its shape (built on the meta device)."""
    return {name: tuple(t.shape) for name, t in build_models(cfg, "meta").state_dict().items()}
