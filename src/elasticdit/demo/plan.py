"""The demo training's plan: every choice a run makes, checked when made; what a resumed run must keep."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .shapes import category_cycle, check_layout

SANDWICHES = ("three", "ratios", "ratio-lightest")
RATIO_PROJECTIONS = ("separate", "shared")
# what a resumed run must share with the run that saved its state (the rest: budgets, logging, threads)
RESUME_MUST_MATCH = (
    "layout",
    "category_weights",
    "ratio_projections",
    "distill",
    "uncovered_weight",
    "pick_weights",
    "sandwich",
    "late_sandwich",
    "late_from",
    "late_pick_weights",
)


def check_saved(saved: dict[str, Any], fields: tuple[str, ...], where: str) -> dict[str, Any]:
    """A saved plan or latents record as it is; one saved by an older trainer (before one of `fields` existed)
    is refused: what it trained with cannot be known, so it cannot be resumed."""
    missing = [name for name in fields if name not in saved]
    if missing:
        raise ValueError(
            f"{where} was saved by an older trainer (no {', '.join(missing)}); it cannot be resumed: start a new run"
        )
    return saved


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
    # lifted ratio 2 and the full point; 1, uniform, before: docs/demo-training-history.md)
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
    # "shared" since 2026-12-01 (it lifted ratio 2 from 0.08-0.16 to 0.32-0.41: docs/demo-training-history.md)
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
