"""ElasticDiT: one set of MMDiT weights, many operating points (compression ratio x depth plan)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..operating_points import OperatingPoint
from ..ssba.lowering import make_core
from ..ssba.pattern import block_is_shifted, compile_pattern
from .embeddings import CombinedTimestepTextProjEmbeddings, PatchEmbed, ratio_suffix
from .layers import AdaLayerNormContinuous
from .mmdit import JointTransformerBlock

OUTPUT_PROJECTION = "proj_out"  # module name prefix of the per-ratio output projections (quantization singles them out)
SIGMA_FLOOR = 0.05  # velocity from a predicted sample divides by sigma; below this it divides by the floor


class ElasticDiT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        t = cfg.transformer
        self.cfg = cfg
        ratios = cfg.elastic.compression_ratios
        max_size = t.pos_embed_max_size if t.pos_embed == "cropped" else 0
        self.pos_embed = PatchEmbed(t.in_channels, t.hidden_size, t.patch_size, ratios, max_size)
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(t.hidden_size, t.pooled_dim)
        self.context_embedder = nn.Linear(t.text_dim, t.hidden_size)
        self.transformer_blocks = nn.ModuleList(
            JointTransformerBlock(
                t.hidden_size,
                t.num_heads,
                t.mlp_hidden,
                t.qk_norm,
                context_pre_only=t.context_pre_only_last and i == t.num_blocks - 1,
                dual_attention=i in t.dual_attention_layers,
            )
            for i in range(t.num_blocks)
        )
        self.norm_out = AdaLayerNormContinuous(t.hidden_size)
        for r in ratios:
            cell = t.patch_size * r
            self.add_module(
                f"{OUTPUT_PROJECTION}{ratio_suffix(r)}", nn.Linear(t.hidden_size, cell * cell * t.in_channels)
            )

    def proj_out_for(self, ratio: int) -> nn.Linear:
        return getattr(self, f"{OUTPUT_PROJECTION}{ratio_suffix(ratio)}")

    def attention_cores(
        self, point: OperatingPoint, resolution: tuple[int, int] | None = None, kind: str = "masked"
    ) -> list[nn.Module]:
        """One core per block the point runs; SSBA layers get their grid's pattern and shift parity."""
        s, t = self.cfg.ssba, self.cfg.transformer
        grid = self.cfg.token_grid(point.ratio, resolution)
        cores = []
        for index in point.blocks:
            pattern = None
            if s.enabled:
                pattern = compile_pattern(grid, s.tile, s.window, block_is_shifted(index, s.shift), t.text_len)
            cores.append(make_core(kind if s.enabled else "dense", t.head_dim, pattern))
        return cores

    def image_attention_cores(
        self, point: OperatingPoint, resolution: tuple[int, int] | None = None, kind: str = "masked"
    ) -> list[nn.Module] | None:
        """The cores of the image-only `attn2` of MMDiT-X blocks (the SSBA pattern without text), one per block the
        point runs (an Identity where the block has none); None when no block the point runs has one."""
        s, t = self.cfg.ssba, self.cfg.transformer
        if not set(point.blocks) & set(t.dual_attention_layers):
            return None
        grid = self.cfg.token_grid(point.ratio, resolution)
        cores: list[nn.Module] = []
        for index in point.blocks:
            if index not in t.dual_attention_layers:
                cores.append(nn.Identity())
                continue
            pattern = None
            if s.enabled:
                pattern = compile_pattern(grid, s.tile, s.window, block_is_shifted(index, s.shift), 0)
            cores.append(make_core(kind if s.enabled else "dense", t.head_dim, pattern))
        return cores

    def operating_point(
        self, point: OperatingPoint, resolution: tuple[int, int] | None = None, attention: str = "masked"
    ) -> StaticElasticDiT:
        """The static network of one operating point; it shares this model's parameters."""
        return StaticElasticDiT(self, point, resolution or self.cfg.resolution, attention)

    def forward(
        self,
        latent: torch.Tensor,
        sigma: torch.Tensor,
        text: torch.Tensor,
        pooled: torch.Tensor,
        point: OperatingPoint,
        attention: str = "masked",
    ) -> torch.Tensor:
        """velocity [B, C, h, w] for latent [B, C, h, w], sigma [B] in [0, 1], text [B, L, Dt], pooled [B, Dp]."""
        f = self.cfg.vae.downsample if self.cfg.vae else 8
        resolution = (latent.shape[-2] * f, latent.shape[-1] * f)
        return self.operating_point(point, resolution, attention)(latent, sigma, text, pooled)


class StaticElasticDiT(nn.Module):
    """One operating point with everything fixed: grid, blocks, projections, position codes, attention cores.

    It holds the parent's modules (so parameters stay shared) and its own constants.
    """

    def __init__(self, dit: ElasticDiT, point: OperatingPoint, resolution: tuple[int, int], attention: str):
        super().__init__()
        t = dit.cfg.transformer
        self.point, self.resolution, self.attention = point, resolution, attention
        self.grid = dit.cfg.token_grid(point.ratio, resolution)
        self.cell = t.patch_size * point.ratio
        self.channels = t.in_channels
        self.patch_embed = dit.pos_embed.projection(point.ratio)
        with torch.no_grad():
            codes = dit.pos_embed.position_codes(self.grid, point.ratio).detach().clone()
        self.register_buffer("codes", codes.contiguous(), persistent=False)
        self.time_text_embed = dit.time_text_embed
        self.context_embedder = dit.context_embedder
        self.blocks = nn.ModuleList(dit.transformer_blocks[i] for i in point.blocks)
        self.cores = nn.ModuleList(dit.attention_cores(point, resolution, attention))
        image_cores = dit.image_attention_cores(point, resolution, attention)
        self.image_cores = None if image_cores is None else nn.ModuleList(image_cores)
        self.norm_out = dit.norm_out
        self.proj_out = dit.proj_out_for(point.ratio)
        self.predicts_sample = t.prediction == "sample"

    def forward(
        self, latent: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        """timestep is sigma in [0, 1], one per batch row (the method signature of a bundle's denoise)."""
        img = self.patch_embed(latent).flatten(2).transpose(1, 2) + self.codes
        temb = self.time_text_embed(timestep, pooled)
        txt = self.context_embedder(text)
        last = len(self.blocks) - 1
        for i, (block, core) in enumerate(zip(self.blocks, self.cores, strict=True)):
            core2 = None if self.image_cores is None else self.image_cores[i]
            img, txt = block(img, txt, temb, core, text_out=i < last, core2=core2)
        img = self.proj_out(self.norm_out(img, temb))
        out = unpatchify(img, self.grid, self.cell, self.channels)
        if self.predicts_sample:
            sigma = timestep.clamp(min=SIGMA_FLOOR).to(out.dtype).reshape(-1, 1, 1, 1)
            return (latent - out) / sigma
        return out


def unpatchify(x: torch.Tensor, grid: tuple[int, int], cell: int, channels: int) -> torch.Tensor:
    """[B, gh*gw, cell*cell*C] -> [B, C, gh*cell, gw*cell] (diffusers' `nhwpqc->nchpwq`)."""
    b = x.shape[0]
    gh, gw = grid
    x = x.reshape(b, gh, gw, cell, cell, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, gh * cell, gw * cell)
