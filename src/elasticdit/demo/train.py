"""Train the demo ElasticDiT on flat-shape scenes, on the CPU, in a fixed time budget.

python -m elasticdit.demo.train --out DIR [--minutes M] [--seed S] [--resume]

Two phases, each resumable from DIR/state.pt (saved every `save_every` steps and at the end of a phase):

1. `vae`: the T-DVAE (Haar DWT encoder, IDWT decoder) on random crops of rendered scenes: L1 + MSE
   reconstruction, a little latent L2, and small latent noise so the decoder forgives an imperfect sampler.
   Then every training scene is encoded once; the latent mean and std give `shift_factor` and
   `scaling_factor`.
2. `dit`: the text encoder and the ElasticDiT together, rectified flow on the cached latents, elastically with
   the sandwich rule (each step the full operating point, the lightest and one other at random, gradients
   summed) and SSBA masks on. The prompt is dropped for `cfg_dropout` of the rows, so classifier-free
   guidance works. The checkpoint holds the EMA weights.

With `minutes` the run is budgeted by wall time (each phase gets its share, learning rates follow the phase's
elapsed fraction, so a busy machine trains fewer steps rather than longer); with explicit step counts it is
exactly reproducible from the seed, and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import save_checkpoint
from ..config import ModelConfig
from ..model.layers import fused_kernels
from ..model.pipeline import Models, build_models
from ..model.sampler import training_pair
from ..model.text_encoder import tokenize
from ..operating_points import OperatingPoint, full_point, lightest_point, operating_points
from .shapes import CATEGORIES, LAYOUTS, category_cycle, check_layout, render, training_scenes
from .shared_projections import check_shareable, effective_tensors, share_projections, zero_differences

STATE_FILE = "state.pt"
LATENTS_FILE = "latents.pt"
LOG_FILE = "log.jsonl"
CHECKPOINT_FILE = "demo.safetensors"
SANDWICHES = ("three", "ratios", "ratio-lightest")
RATIO_PROJECTIONS = ("separate", "shared")
# what runs and latents saved before TrainPlan had these fields were trained with
LEGACY_PLAN: dict[str, Any] = {
    "layout": "free",
    "category_weights": {},
    "ratio_projections": "separate",
    "distill": 0.0,
    "uncovered_weight": 1.0,
    "pick_weights": {},
    "sandwich": "three",
    "late_sandwich": None,
    "late_from": 0.7,
    "late_pick_weights": {},
}
RESUME_MUST_MATCH = tuple(LEGACY_PLAN)


def saved_plan(saved: dict[str, Any]) -> dict[str, Any]:
    """A plan (or latents record) as saved, with the fields it predates filled in as they were then."""
    return LEGACY_PLAN | saved


@dataclass(frozen=True)
class TrainPlan:
    minutes: float | None = 55.0  # wall-time budget of the whole run; None: use vae_steps and dit_steps
    vae_share: float = 0.10  # of the budget, for the VAE phase
    reserve_minutes: float = 1.5  # kept back for encoding the scenes and writing the checkpoint
    vae_steps: int = 400
    dit_steps: int = 1500
    scenes: int = 12000
    # training scenes' layout (shapes.LAYOUTS): "slots" gives each prompt one canonical arrangement, so the DiT
    # need not learn to decide a free layout from strong noise, which a 55-minute CPU run could not (docs/demo.md)
    layout: str = "slots"
    # integer repeats of a category in the scenes' cycle (shapes.category_cycle); {} is uniform
    category_weights: dict[str, int] = dataclasses.field(default_factory=dict)
    vae_batch: int = 32
    vae_crop: int = 64  # px; the T-DVAE is fully convolutional, so it trains on crops
    vae_lr: float = 2e-3
    latent_l2: float = 1e-4
    latent_noise: float = 0.05  # decoder input noise, relative to the latent's std
    dit_batch: int = 32
    dit_lr: float = 8e-4  # the text encoder's too
    warmup: int = 50
    decay_from: float = 0.7  # learning rate decays linearly to 5% over the last 30% of a phase
    weight_decay: float = 0.01
    ema: float = 0.995
    cfg_dropout: float = 0.1
    sigma_shift: float = 2.0  # time shift of the training sigmas
    # "sum": the sandwich's losses summed; "log": their logs summed, so each point's gradient is relative to its
    # own loss and the coarse ratios (whose loss stays several times higher) do not drown the full point's
    loss_balance: str = "sum"
    # "three": the sandwich rule (full, lightest, one other at random); "ratios": also, every step, one random point
    # of each compression ratio that neither the full nor the lightest point has (their shared projections otherwise
    # train only when the random pick lands on them); "ratio-lightest": also, every step, the lightest point of each
    # such ratio (the sandwich rule's lower bound applied per ratio), the random pick drawn from the rest
    sandwich: str = "three"
    # the random pick's weight for points of a compression ratio neither the full nor the lightest point has (the
    # others weigh 1): no point of that ratio trains unless picked. 3 since 2026-12-01 (with shared projections it
    # lifted ratio 2 and the full point; 1, uniform, before: benchmarks/RESULTS.md)
    uncovered_weight: float = 3.0
    # the random pick's weight of named points, in place of the rule above ({"r1_d3": 3.0, ...})
    pick_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    # a curriculum: from DiT progress `late_from` (0..1 of the phase's budget) on, each step's points follow
    # `late_sandwich` and `late_pick_weights` instead; None keeps `sandwich` throughout
    late_sandwich: str | None = None
    late_from: float = 0.7
    late_pick_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    # initial std of the text encoder's token embedding, the position embedding's scale as in CLIP; None keeps
    # PyTorch's N(0, 1) (checkpoints before 2026-11-28), where the position code is too weak at the start to tell
    # "a red circle and a blue square" from "a blue circle and a red square"
    token_embedding_std: float | None = 0.02
    # "separate": every ratio's patch embedding and output projection are their own parameters; "shared": ratio r's
    # are ratio 1's resized plus a learned difference (shared_projections.py), so ratio 1's gradient every step
    # also trains the ratios the sandwich rule seldom picks; the checkpoint stores plain per-ratio tensors either way.
    # "shared" since 2026-12-01 (it lifted ratio 2 from 0.08-0.16 to 0.32-0.41: benchmarks/RESULTS.md)
    ratio_projections: str = "shared"
    # in-place distillation (the sandwich rule's companion in slimmable networks): the other points train on the
    # full point's noise and timesteps, towards `distill` x its detached prediction + (1 - distill) x the data's
    # velocity; 0 trains every point on the data alone, each with its own noise
    distill: float = 0.0
    save_every: int = 50
    log_every: int = 10
    threads: int = 2
    bf16: bool = True  # autocast matmuls and convolutions to bfloat16 (float32 master weights)
    # LayerNorm and tanh-GELU as PyTorch's fused kernels (layers.fused_kernels), not the export formulation's
    # spelled-out forms (checkpoints before 2026-12-01); same maths to float rounding
    fused_kernels: bool = True
    dtype: str = "float16"  # of the written checkpoint

    def __post_init__(self) -> None:
        check_layout(self.layout)
        category_cycle(self.category_weights)
        if not self.uncovered_weight > 0:
            raise ValueError(f"uncovered_weight must be positive, got {self.uncovered_weight}")
        for name, weight in (self.pick_weights | self.late_pick_weights).items():
            if not (weight > 0 and math.isfinite(weight)):
                raise ValueError(f"the pick weight of {name} must be positive and finite, got {weight}")
        if self.token_embedding_std is not None and not self.token_embedding_std > 0:
            raise ValueError(f"token_embedding_std must be positive, got {self.token_embedding_std}")
        for sandwich in [s for s in (self.sandwich, self.late_sandwich) if s is not None]:
            if sandwich not in SANDWICHES:
                raise ValueError(f"unknown sandwich {sandwich!r}; expected one of {SANDWICHES}")
        if not 0.0 < self.late_from < 1.0:
            raise ValueError(f"late_from must be between 0 and 1, got {self.late_from}")
        if self.late_pick_weights and self.late_sandwich is None:
            raise ValueError("late pick weights need a late sandwich")
        if self.ratio_projections not in RATIO_PROJECTIONS:
            raise ValueError(
                f"unknown ratio projections {self.ratio_projections!r}; expected one of {RATIO_PROJECTIONS}"
            )
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"distill must be in [0, 1], got {self.distill}")

    def late(self) -> TrainPlan | None:
        """The plan's late stage as a plan of its own (its sandwich and pick weights), or None without one."""
        if self.late_sandwich is None:
            return None
        return dataclasses.replace(
            self,
            sandwich=self.late_sandwich,
            pick_weights=self.late_pick_weights,
            late_sandwich=None,
            late_pick_weights={},
        )


# ---------------------------------------------------------------------------------------------- helpers


class SDPAMaskedAttention(nn.Module):
    """The masked SSBA reference computed with `scaled_dot_product_attention` (fused, much faster to train);
    same mask, same result to float rounding."""

    def __init__(self, head_dim: int, bias: torch.Tensor | None):
        super().__init__()
        self.scale = head_dim**-0.5
        self.bias = bias

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # [B*H, S, D] -> [1, B*H, S, D]: the fused CPU kernel wants 4-D inputs (3-D falls back to the math path).
        out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=self.bias, scale=self.scale)
        return out[0]


def training_net(models: Models, point: OperatingPoint, shared: bool = False) -> nn.Module:
    """The static network of one operating point with SSBA masks on (its cores swapped for fused ones), and with
    `shared`, ratio 1's projections shared with its ratio's."""
    net = models.transformer.operating_point(point, attention="masked")
    head_dim = models.cfg.transformer.head_dim
    net.cores = nn.ModuleList(SDPAMaskedAttention(head_dim, getattr(core, "bias", None)) for core in net.cores)
    if shared:
        share_projections(net, models.transformer)
    return net


def init_weights(models: Models, seed: int, token_std: float | None = None) -> None:
    """DiT's initialisation: Xavier linears, adaLN modulation and output projections zeroed (adaLN-Zero).

    The text encoder's position embedding starts at N(0, 0.02); its token embedding at N(0, token_std), or at
    PyTorch's N(0, 1) when None, where the word's identity outweighs its position about 50 to 1.
    """
    torch.manual_seed(seed)
    dit = models.transformer
    for module in dit.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    for r in models.cfg.elastic.compression_ratios:
        proj = dit.pos_embed.projection(r)
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.zeros_(dit.proj_out_for(r).weight)
        nn.init.zeros_(dit.proj_out_for(r).bias)
    for embedder in (dit.time_text_embed.timestep_embedder, dit.time_text_embed.text_embedder):
        nn.init.normal_(embedder.linear_1.weight, std=0.02)
        nn.init.normal_(embedder.linear_2.weight, std=0.02)
    for block in dit.transformer_blocks:
        for norm in (block.norm1, block.norm1_context):
            nn.init.zeros_(norm.linear.weight)
            nn.init.zeros_(norm.linear.bias)
    nn.init.zeros_(dit.norm_out.linear.weight)
    nn.init.zeros_(dit.norm_out.linear.bias)
    if models.text_encoder is not None:
        nn.init.normal_(models.text_encoder.position_embedding, std=0.02)
        if token_std is not None:
            nn.init.normal_(models.text_encoder.token_embedding.weight, std=token_std)
    if models.vae is not None and models.vae.encoder is not None:
        init_vae_haar(models.vae)


@torch.no_grad()
def init_vae_haar(vae: nn.Module) -> None:
    """Start the T-DVAE as an exact Haar codec of the image's block means (one latent cell's block; colour and
    silhouettes from step 0).

    Latent channels 0-2 carry the block means of R, G, B (plus one, so black is zero); through the ReLUs the
    coarsest LL band travels as a (+x, -x) pair of channels, and every residual block starts as the identity
    (its last conv zeroed). The other channels start random and learn the detail (edges) on top.
    """
    enc, dec = list(vae.encoder), list(vae.decoder)  # top level: the stage convs, not the blocks' convs
    for block in [m for m in vae.modules() if m.__class__.__name__ == "Block"]:
        nn.init.zeros_(block.conv[-1].weight)
        nn.init.zeros_(block.conv[-1].bias)
    convs_e = [m for m in enc if isinstance(m, nn.Conv2d)]
    convs_d = [m for m in dec if isinstance(m, nn.Conv2d)]

    def route(conv: nn.Conv2d, pairs: list[tuple[int, int, float]]) -> None:
        outs = {o for o, _, _ in pairs}
        c = conv.kernel_size[0] // 2
        for o in outs:
            conv.weight[o].zero_()
            conv.bias[o] = 0.0
        for o, i, w in pairs:
            conv.weight[o, i, c, c] = w

    # encoder: DWT (LL of colour c at index c) -> +LL / -LL pair in channels c, c + 3; LL of those onward
    route(convs_e[0], [(c, c, 1.0) for c in range(3)] + [(c + 3, c, -1.0) for c in range(3)])
    for conv in convs_e[1:-1]:
        route(conv, [(j, j, 1.0) for j in range(6)])
    # the last LL band is 2**levels x the block mean m in [-1, 1]; the latent holds m + 1, so black is 0
    gain = float(2 ** len(convs_d[1:]))
    route(convs_e[-1], [(c, c, 1 / gain) for c in range(3)] + [(c, c + 3, -1 / gain) for c in range(3)])
    convs_e[-1].bias[:3] = 1.0
    # decoder: latent c -> (+, -) pair of the LL band; each IDWT stage's LL band of channel j from channel j
    route(convs_d[0], [(c, c, gain) for c in range(3)] + [(c + 3, c, -gain) for c in range(3)])
    convs_d[0].bias[:3], convs_d[0].bias[3:6] = -gain, gain
    stages = convs_d[1:]
    for conv in stages:  # the detail bands (LH, HL, HH) of the routed channels start at zero
        width = conv.out_channels // 4
        routed = 6 if conv is not stages[-1] else 3
        route(conv, [(band * width + j, 0, 0.0) for band in range(1, 4) for j in range(routed)])
    for conv in stages[:-1]:
        route(conv, [(j, j, 1.0) for j in range(6)])
    route(stages[-1], [(c, c, 1.0) for c in range(3)] + [(c, c + 3, -1.0) for c in range(3)])


def lr_factor(step: int, progress: float, plan: TrainPlan) -> float:
    """Linear warmup, constant, then linear decay to 5% once `progress` (0..1 of the phase) passes decay_from."""
    warm = min(1.0, (step + 1) / plan.warmup)
    if progress <= plan.decay_from:
        return warm
    tail = min(1.0, (progress - plan.decay_from) / (1.0 - plan.decay_from))
    return warm * (1.0 - 0.95 * tail)


def sample_sigmas(n: int, generator: torch.Generator, shift: float = 1.0) -> torch.Tensor:
    """Logit-normal (SD3) with 10% uniform, so both ends of the schedule are seen, then SD3's time shift
    (shift > 1 spends more of the training on high noise, where the layout is decided)."""
    logit = torch.sigmoid(torch.randn(n, generator=generator))
    uniform = torch.rand(n, generator=generator)
    pick = torch.rand(n, generator=generator) < 0.1
    s = torch.where(pick, uniform, logit)
    return (shift * s / (1 + (shift - 1) * s)).clamp(1e-4, 1.0)


def render_scenes(scenes: list, size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size]."""
    return torch.from_numpy(np.stack([render(s, size) for s in scenes])).permute(0, 3, 1, 2).contiguous()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float(), b.float()).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


class EMA:
    def __init__(self, modules: list[nn.Module], decay: float):
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        for p, s in zip(self.params, self.shadow, strict=True):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


# ---------------------------------------------------------------------------------------------- trainer


def random_picks(
    cfg: ModelConfig, plan: TrainPlan
) -> tuple[list[list[OperatingPoint]], list[OperatingPoint], torch.Tensor]:
    """What each step adds to the full and the lightest point: one point of each group (with sandwich "ratios", a
    compression ratio neither has; with "ratio-lightest", that ratio's lightest point alone), and one of the others
    drawn with the returned weights."""
    points = operating_points(cfg)
    full, light = full_point(cfg), lightest_point(cfg)
    uncovered = sorted({q.ratio for q in points} - {full.ratio, light.ratio}) if plan.sandwich != "three" else []
    per_ratio = [[q for q in points if q.ratio == r] for r in uncovered]
    if plan.sandwich == "ratio-lightest":
        per_ratio = [[min(group, key=lambda q: len(q.blocks))] for group in per_ratio]
    grouped = {q for group in per_ratio for q in group}
    others = [q for q in points if q not in (full, light) and q not in grouped] or [full]
    unknown = sorted(set(plan.pick_weights) - {q.name for q in others})
    if unknown:
        raise ValueError(
            f"no random pick can land on {', '.join(unknown)}; pick weights name one of "
            f"{', '.join(q.name for q in others)}"
        )
    default = [plan.uncovered_weight if q.ratio not in (full.ratio, light.ratio) else 1.0 for q in others]
    weights = torch.tensor([plan.pick_weights.get(q.name, w) for q, w in zip(others, default, strict=True)])
    return per_ratio, others, weights


class Trainer:
    def __init__(self, out: Path, cfg: ModelConfig, plan: TrainPlan, seed: int, log=print):
        if cfg.vae is None or cfg.text_encoder is None or not cfg.vae.has_encoder:
            raise ValueError("the demo trains a config with a T-DVAE (with encoder) and a text encoder")
        self.out, self.cfg, self.plan, self.seed, self.log_fn = Path(out), cfg, plan, seed, log
        self.shared = plan.ratio_projections == "shared"
        self.fixed = [full_point(cfg), lightest_point(cfg)]  # trained every step
        # each stage's (per-ratio groups, random pick's points, their weights): the plan's, then its late stage's
        self.stages = [random_picks(cfg, stage) for stage in (plan, plan.late()) if stage is not None]
        self.out.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(plan.threads)
        torch.manual_seed(seed)
        self.models = build_models(cfg)
        init_weights(self.models, seed, plan.token_embedding_std)
        if self.shared:
            check_shareable(self.models.transformer)
            zero_differences(self.models.transformer)
        self.generator = torch.Generator().manual_seed(seed)
        m = self.models
        self.vae_opt = torch.optim.AdamW(m.vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)
        decay, no_decay = [], []
        for module in (m.transformer, m.text_encoder):
            for name, p in module.named_parameters():
                (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
        self.dit_opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": plan.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=plan.dit_lr,
            betas=(0.9, 0.99),
        )
        self.ema = EMA([m.transformer, m.text_encoder], plan.ema)
        self.phase, self.step, self.elapsed = "vae", 0, 0.0  # elapsed: wall seconds of the whole run so far
        self.phase_start = 0.0  # elapsed when the current phase began
        self.scaling = (1.0, 0.0)  # (scaling_factor, shift_factor), set after the VAE phase
        self.latents: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self._images: torch.Tensor | None = None
        self._clock = time.monotonic()

    # ---- bookkeeping

    @contextlib.contextmanager
    def kernels(self) -> Iterator[None]:
        """How the training passes compute: bfloat16 autocast and fused kernels, as the plan says."""
        fused = fused_kernels() if self.plan.fused_kernels else contextlib.nullcontext()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.plan.bf16), fused:
            yield

    def _tick(self) -> None:
        now = time.monotonic()
        self.elapsed += now - self._clock
        self._clock = now

    def _budget(self, phase: str) -> float | None:
        p = self.plan
        if p.minutes is None:
            return None
        total = p.minutes * 60.0
        if phase == "vae":
            return total * p.vae_share
        return total - p.reserve_minutes * 60.0 - self.phase_start

    def _progress(self, phase: str) -> float:
        budget = self._budget(phase)
        if budget is None:
            steps = self.plan.vae_steps if phase == "vae" else self.plan.dit_steps
            return self.step / max(steps, 1)
        return (self.elapsed - self.phase_start) / max(budget, 1e-9)

    def log(self, record: dict[str, Any]) -> None:
        record = {"phase": self.phase, "step": self.step, "elapsed_s": round(self.elapsed, 1), **record}
        with open(self.out / LOG_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
        self.log_fn(" ".join(parts))

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "plan": dataclasses.asdict(self.plan),
            "config": self.cfg.to_json(),
            "phase": self.phase,
            "step": self.step,
            "elapsed": self.elapsed,
            "phase_start": self.phase_start,
            "scaling": list(self.scaling),
            "models": self.models.state_dict(),
            "vae_opt": self.vae_opt.state_dict(),
            "dit_opt": self.dit_opt.state_dict(),
            "ema": list(self.ema.shadow),
            "generator": self.generator.get_state(),
        }

    def save_state(self) -> None:
        self._tick()
        tmp = self.out / (STATE_FILE + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(self.out / STATE_FILE)

    def load_state(self) -> None:
        state = torch.load(self.out / STATE_FILE, weights_only=True)
        if state["config"] != self.cfg.to_json() or state["seed"] != self.seed:
            raise ValueError(f"{self.out / STATE_FILE} was saved for another config or seed; not resuming")
        saved = saved_plan(state["plan"])
        for name in RESUME_MUST_MATCH:
            if saved[name] != getattr(self.plan, name):
                raise ValueError(f"{self.out / STATE_FILE} trained with {name} {saved[name]!r}; not resuming")
        for prefix, module in self.models.parts().items():  # copy into the live parameters (optimizers hold them)
            module.load_state_dict(
                {k[len(prefix) + 1 :]: v for k, v in state["models"].items() if k.startswith(prefix + ".")}
            )
        self.vae_opt.load_state_dict(state["vae_opt"])
        self.dit_opt.load_state_dict(state["dit_opt"])
        with torch.no_grad():
            for s, saved in zip(self.ema.shadow, state["ema"], strict=True):
                s.copy_(saved)
        self.generator.set_state(state["generator"])
        self.phase, self.step = state["phase"], state["step"]
        self.elapsed, self.phase_start = state["elapsed"], state["phase_start"]
        self.scaling = tuple(state["scaling"])
        self._clock = time.monotonic()

    # ---- data

    def scenes(self) -> list:
        return training_scenes(self.plan.scenes, self.seed, self.plan.layout, self.plan.category_weights)

    def images(self) -> torch.Tensor:
        if self._images is None:
            self._images = render_scenes(self.scenes(), self.cfg.resolution[0])
        return self._images

    # ---- phase 1: the T-DVAE

    def train_vae(self) -> None:
        p, vae = self.plan, self.models.vae
        images = self.images()
        n, size = images.shape[0], images.shape[-1]
        crop = min(p.vae_crop, size)
        vae.train()
        while True:
            self._tick()
            progress = self._progress("vae")
            if progress >= 1.0:
                break
            lr = p.vae_lr * lr_factor(self.step, progress, p)
            for group in self.vae_opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(n, (p.vae_batch,), generator=self.generator)
            top, left = (torch.randint(size - crop + 1, (2,), generator=self.generator) // 8 * 8).tolist()
            x = to_unit(images[idx, :, top : top + crop, left : left + crop]) * 2.0 - 1.0
            with self.kernels():
                z = vae.encoder(x).float()
                std = z.detach().std()
                noise = torch.randn(z.shape, generator=self.generator) * std * p.latent_noise
                recon = vae.decoder(z + noise).float()
            l1, l2 = F.l1_loss(recon, x), F.mse_loss(recon, x)
            loss = l1 + l2 + p.latent_l2 * z.pow(2).mean()
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            self.vae_opt.step()
            self.step += 1
            if self.step % p.log_every == 0:
                self.log(
                    {
                        "loss": loss.item(),
                        "l1": l1.item(),
                        "psnr": psnr(recon * 0.5 + 0.5, x * 0.5 + 0.5),
                        "latent_std": std.item(),
                        "lr": lr,
                    }
                )
            if self.step % p.save_every == 0:
                self.save_state()
        vae.eval()
        self.encode_scenes()
        self.phase, self.step, self.phase_start = "dit", 0, self.elapsed
        self.save_state()

    @torch.no_grad()
    def encode_scenes(self) -> None:
        """Every training scene's latent (unscaled), once; their mean/std give the scaling and shift factors."""
        images = self.images()
        with self.kernels():
            latents = torch.cat([self.models.vae.encode(to_unit(b)).float() for b in images.split(256)])
        shift = float(latents.mean())
        scale = float(1.0 / latents.std())
        self.scaling = (scale, shift)
        held = images[-256:]
        recon = self.models.vae.decode(latents[-256:])
        self.log(
            {
                "encoded": len(latents),
                "scaling_factor": scale,
                "shift_factor": shift,
                "train_psnr": psnr(recon, to_unit(held)),
            }
        )
        saved = {
            "latents": latents,
            "seed": self.seed,
            "scenes": len(latents),
            "layout": self.plan.layout,
            "category_weights": self.plan.category_weights,
        }
        torch.save(saved, self.out / LATENTS_FILE)
        self.latents = latents

    def load_latents(self) -> torch.Tensor:
        if self.latents is None:
            saved = saved_plan(torch.load(self.out / LATENTS_FILE, weights_only=True))
            run = (saved["seed"], saved["scenes"], saved["layout"], saved["category_weights"])
            if run != (self.seed, self.plan.scenes, self.plan.layout, self.plan.category_weights):
                raise ValueError(f"{self.out / LATENTS_FILE} belongs to another run")
            self.latents = saved["latents"]
        return self.latents

    # ---- phase 2: text encoder + ElasticDiT, sandwich rule

    def prompt_tokens(self) -> torch.Tensor:
        if self.tokens is None:
            te, length = self.cfg.text_encoder, self.cfg.transformer.text_len
            self.tokens = torch.tensor([tokenize(s.prompt, te.vocab, length) for s in self.scenes()])
        return self.tokens

    def train_dit(self) -> None:
        p, m = self.plan, self.models
        scale, shift = self.scaling
        x_all = (self.load_latents() - shift) * scale
        tokens_all = self.prompt_tokens()
        empty = torch.tensor(tokenize("", self.cfg.text_encoder.vocab, self.cfg.transformer.text_len))
        nets = {q.name: training_net(m, q, self.shared) for q in operating_points(self.cfg)}
        m.transformer.train()
        m.text_encoder.train()
        params = [q for group in self.dit_opt.param_groups for q in group["params"]]
        while True:
            self._tick()
            progress = self._progress("dit")
            if progress >= 1.0:
                break
            factor = lr_factor(self.step, progress, p)
            for group in self.dit_opt.param_groups:
                group["lr"] = p.dit_lr * factor
            idx = torch.randint(len(x_all), (p.dit_batch,), generator=self.generator)
            x0, tokens = x_all[idx], tokens_all[idx].clone()
            drop = torch.rand(p.dit_batch, generator=self.generator) < p.cfg_dropout
            tokens[drop] = empty
            step_points = self.step_points(progress)
            with self.kernels():
                text, pooled = m.text_encoder(tokens)
                losses = self.sandwich_losses([nets[q.name] for q in step_points], x0, text, pooled)
            losses = dict(zip([q.name for q in step_points], losses, strict=True))
            loss = sum(torch.log(v) for v in losses.values()) if p.loss_balance == "log" else sum(losses.values())
            self.dit_opt.zero_grad(set_to_none=True)
            loss.backward()
            grad = nn.utils.clip_grad_norm_(params, 1.0)
            self.dit_opt.step()
            self.ema.update(self.step)
            self.step += 1
            if self.step % p.log_every == 0:
                record = {"loss": loss.item(), "lr": p.dit_lr * factor, "grad": float(grad)}
                record |= {f"loss_{k}": v.item() for k, v in losses.items()}
                self.log(record)
            if self.step % p.save_every == 0:
                self.save_state()
                self.write_checkpoint()
        self.phase = "done"
        self.save_state()

    def sandwich_losses(
        self, nets: list[nn.Module], x0: torch.Tensor, text: torch.Tensor, pooled: torch.Tensor
    ) -> list[torch.Tensor]:
        """Each net's loss on one batch; the first is the full point, which the others distill from if the plan
        says so (then all share its noise and timesteps)."""

        def noised() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            sigma = sample_sigmas(len(x0), self.generator, self.plan.sigma_shift)
            return sigma, *training_pair(x0, torch.randn(x0.shape, generator=self.generator), sigma)

        if not self.plan.distill:
            losses = []
            for net in nets:
                sigma, xt, target = noised()
                losses.append(F.mse_loss(net(xt, sigma, text, pooled).float(), target))
            return losses
        sigma, xt, target = noised()
        predicted = nets[0](xt, sigma, text, pooled).float()
        distilled = torch.lerp(target, predicted.detach(), self.plan.distill)
        rest = [F.mse_loss(net(xt, sigma, text, pooled).float(), distilled) for net in nets[1:]]
        return [F.mse_loss(predicted, target), *rest]

    def step_points(self, progress: float) -> list[OperatingPoint]:
        """The points a step at DiT `progress` trains: the full, the lightest, one of each group, one random other
        (the groups and the pick those of the plan's late stage from its `late_from` on)."""
        late = len(self.stages) > 1 and progress >= self.plan.late_from
        per_ratio, others, weights = self.stages[1 if late else 0]
        picks = [g[int(torch.randint(len(g), (1,), generator=self.generator))] for g in per_ratio]
        picks.append(self.pick(others, weights))
        return [*self.fixed, *picks]

    def pick(self, points: list[OperatingPoint], weights: torch.Tensor) -> OperatingPoint:
        if bool((weights == 1.0).all()):  # uniform: the draw of the checkpoints before 2026-12-01
            return points[int(torch.randint(len(points), (1,), generator=self.generator))]
        return points[int(torch.multinomial(weights, 1, generator=self.generator))]

    # ---- output

    def trained_config(self) -> ModelConfig:
        scale, shift = self.scaling
        vae = dataclasses.replace(self.cfg.vae, scaling_factor=scale, shift_factor=shift)
        return dataclasses.replace(self.cfg, vae=vae)

    def write_checkpoint(self, path: Path | None = None) -> str:
        """The EMA transformer and text encoder with the trained T-DVAE, as a v1 checkpoint."""
        path = path or self.out / CHECKPOINT_FILE
        dtype = getattr(torch, self.plan.dtype)
        self.ema.swap()
        try:
            state = self.models.state_dict()
            if self.shared:
                state |= {f"transformer.{k}": v for k, v in effective_tensors(self.models.transformer).items()}
            tensors = {k: v.detach().to(dtype).clone() for k, v in state.items()}
        finally:
            self.ema.swap()
        tmp = path.with_suffix(".tmp")
        sha = save_checkpoint(tmp, self.trained_config(), tensors)
        tmp.replace(path)
        return sha

    def run(self, resume: bool = False) -> Path:
        state = self.out / STATE_FILE
        if resume and state.is_file():
            self.load_state()
            self.log({"resumed": True})
        elif state.is_file() and not resume:
            raise FileExistsError(f"{state} exists: pass --resume to continue it, or choose another --out")
        if self.phase == "vae":
            self.train_vae()
        if self.phase == "dit":
            self.train_dit()
        sha = self.write_checkpoint()
        self.log({"checkpoint": str(self.out / CHECKPOINT_FILE), "sha256": sha})
        return self.out / CHECKPOINT_FILE


def train(
    out: str | Path,
    cfg: ModelConfig | None = None,
    plan: TrainPlan | None = None,
    seed: int = 0,
    resume: bool = False,
    log=print,
) -> Path:
    """Train (or resume) into `out`; returns the path of the written checkpoint."""
    from ..presets import demo_config

    random.seed(seed)
    np.random.seed(seed)
    trainer = Trainer(Path(out), cfg or demo_config(), plan or TrainPlan(), seed, log)
    return trainer.run(resume)


def parse_assignments(items: list[str], usage: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    """["name=value", ...] -> {name: convert(value)}; a missing name or `=`, or a value `convert` refuses
    (ValueError), is the error `usage`, given the item."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            values[name.strip()] = convert(value)
        except ValueError:
            raise ValueError(f"{usage}, got {item!r}") from None
    return values


def unsigned_int(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(text)
    return int(text)


def parse_category_weights(items: list[str]) -> dict[str, int]:
    """["position=2", ...] -> {"position": 2}; the names and values are checked by TrainPlan."""
    return parse_assignments(items, "--category-weight wants CATEGORY=N with a positive integer N", unsigned_int)


def parse_pick_weights(items: list[str]) -> dict[str, float]:
    """["r1_d3=3", ...] -> {"r1_d3": 3.0}; the names are checked against the config by the Trainer."""
    return parse_assignments(items, "--pick-weight wants POINT=W with a number W", float)


def main(argv: list[str] | None = None, cfg: ModelConfig | None = None) -> int:
    """The training command; `cfg` (default `presets.demo_config()`) is the design trained."""
    if "OMP_WAIT_POLICY" not in os.environ and argv is None:
        # Sleeping (not spinning) OpenMP workers: on a CPU shared with other jobs, spinning threads wait for
        # descheduled ones and a step runs several times slower. It must be set before torch loads OpenMP.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "elasticdit.demo.train", *sys.argv[1:]])
    parser = argparse.ArgumentParser(prog="python -m elasticdit.demo.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for state.pt, log.jsonl, demo.safetensors")
    parser.add_argument("--minutes", type=float, default=TrainPlan.minutes, help="wall-time budget of the run")
    parser.add_argument(
        "--steps",
        type=int,
        nargs=2,
        metavar=("VAE", "DIT"),
        default=None,
        help="fixed step counts instead of a time budget (exactly reproducible)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", type=int, default=TrainPlan.scenes, help="training scenes rendered")
    parser.add_argument(
        "--layout", choices=LAYOUTS, default=TrainPlan.layout, help="training scenes: canonical slots or free places"
    )
    parser.add_argument(
        "--sandwich",
        choices=SANDWICHES,
        default=TrainPlan.sandwich,
        help="points per step: full + lightest + one random ('three'), also one of every other ratio ('ratios') or "
        "every other ratio's lightest ('ratio-lightest')",
    )
    parser.add_argument(
        "--late-sandwich",
        choices=SANDWICHES,
        default=None,
        help="a curriculum: the sandwich from --late-from of the DiT phase on (default: --sandwich throughout)",
    )
    parser.add_argument(
        "--late-from",
        type=float,
        default=TrainPlan.late_from,
        help="share of the DiT phase (0 to 1) after which --late-sandwich applies",
    )
    parser.add_argument(
        "--late-pick-weight",
        action="append",
        default=[],
        metavar="POINT=W",
        help="like --pick-weight, for the late stage (repeatable)",
    )
    parser.add_argument(
        "--category-weight",
        action="append",
        default=[],
        metavar="CATEGORY=N",
        help=f"repeat a category N times in the scenes' cycle (categories: {', '.join(CATEGORIES)})",
    )
    parser.add_argument(
        "--uncovered-weight",
        type=float,
        default=TrainPlan.uncovered_weight,
        help="random pick's weight for points of a ratio neither the full nor the lightest point has (others: 1)",
    )
    parser.add_argument(
        "--pick-weight",
        action="append",
        default=[],
        metavar="POINT=W",
        help="the random pick's weight of one operating point, in place of the --uncovered-weight rule (repeatable)",
    )
    parser.add_argument(
        "--token-embedding-std",
        type=float,
        default=TrainPlan.token_embedding_std,
        help="initial std of the text encoder's token embedding (the position embedding's is 0.02)",
    )
    parser.add_argument(
        "--ratio-projections",
        choices=RATIO_PROJECTIONS,
        default=TrainPlan.ratio_projections,
        help="train each ratio's patch embedding and output projection on its own ('separate') or as ratio 1's "
        "resized plus a learned difference ('shared'); the checkpoint stores per-ratio tensors either way",
    )
    parser.add_argument(
        "--distill",
        type=float,
        default=TrainPlan.distill,
        help="in-place distillation: the other points' target is this much the full point's prediction (0 to 1)",
    )
    parser.add_argument("--threads", type=int, default=TrainPlan.threads)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    parser.add_argument(
        "--loss-balance", choices=["sum", "log"], default=TrainPlan.loss_balance, help="how the sandwich's losses add"
    )
    args = parser.parse_args(argv)
    try:  # a bad value is a one-line usage error, before anything is written
        plan = TrainPlan(
            minutes=args.minutes,
            scenes=args.scenes,
            layout=args.layout,
            threads=args.threads,
            loss_balance=args.loss_balance,
            sandwich=args.sandwich,
            category_weights=parse_category_weights(args.category_weight),
            uncovered_weight=args.uncovered_weight,
            pick_weights=parse_pick_weights(args.pick_weight),
            late_sandwich=args.late_sandwich,
            late_from=args.late_from,
            late_pick_weights=parse_pick_weights(args.late_pick_weight),
            token_embedding_std=args.token_embedding_std,
            ratio_projections=args.ratio_projections,
            distill=args.distill,
        )
    except ValueError as e:
        parser.error(str(e))
    if args.steps:
        plan = dataclasses.replace(plan, minutes=None, vae_steps=args.steps[0], dit_steps=args.steps[1])
    try:
        path = train(args.out, cfg, plan, seed=args.seed, resume=args.resume, log=lambda s: print(s, flush=True))
    except ValueError as e:  # a plan this config cannot take, or OUT holds another run: refused before writing
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
