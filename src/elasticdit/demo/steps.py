"""What one training step uses: the operating points it trains (the sandwich rule), the noise levels, the
learning rate, the networks with fused attention, and the EMA of the weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..model.pipeline import Models
from ..operating_points import OperatingPoint, full_point, lightest_point, operating_points
from .plan import TrainPlan
from .shared_projections import share_projections


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
