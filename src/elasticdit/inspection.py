"""`inspect`: the elastic space of a checkpoint and the cost of every operating point."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig, check_resolution
from .footprint import WeightStorage, weight_plan
from .model.pipeline import Models
from .operating_points import OperatingPoint, operating_points
from .ssba.pattern import block_is_shifted, compile_pattern

DEFAULT_ATTENTION = "tiles"  # the SSBA lowering the Android recipes export, so `inspect` counts what ships


@dataclass
class LayerSSBA:
    block: int
    shifted: bool
    image_sparsity: float
    joint_sparsity: float


@dataclass
class SSBAStats:
    tile: int
    window: int
    image_sparsity: float  # averaged over the point's layers
    joint_sparsity: float
    layers: list[LayerSSBA] = field(default_factory=list)


@dataclass
class PointReport:
    name: str
    compression_ratio: int
    depth: str
    blocks: list[int]
    token_grid: list[int]
    tokens: int
    text_tokens: int
    params: int
    gflops: float  # per denoise step (batch 1), counted on the module with the export lowering
    gflops_dense: float  # the same module with dense attention
    attention: str
    ssba: SSBAStats | None
    activation_mb: float
    weight_bytes: int = 0  # planned resident weight bytes of its function in the storage given (footprint.py)


def ssba_stats(cfg: ModelConfig, point: OperatingPoint, resolution: tuple[int, int]) -> SSBAStats | None:
    s = cfg.ssba
    if not s.enabled:
        return None
    grid = cfg.token_grid(point.ratio, resolution)
    layers = []
    for b in point.blocks:
        p = compile_pattern(grid, s.tile, s.window, block_is_shifted(b, s.shift), cfg.transformer.text_len)
        layers.append(LayerSSBA(b, p.shifted, p.image_sparsity, p.joint_sparsity))
    return SSBAStats(
        tile=s.tile,
        window=s.window,
        image_sparsity=sum(x.image_sparsity for x in layers) / len(layers),
        joint_sparsity=sum(x.joint_sparsity for x in layers) / len(layers),
        layers=layers,
    )


def _example_inputs(cfg: ModelConfig, resolution: tuple[int, int], device: str, batch: int = 1):
    t = cfg.transformer
    lh, lw = cfg.latent_size(resolution)
    return (
        torch.zeros(batch, t.in_channels, lh, lw, device=device),
        torch.full((batch,), 0.5, device=device),
        torch.zeros(batch, t.text_len, t.text_dim, device=device),
        torch.zeros(batch, t.pooled_dim, device=device),
    )


def count_cost(net: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, float]:
    """(parameters of the modules the forward touches, GFLOPs) from one forward pass on fake tensors: shapes
    only, so it computes nothing and allocates no activations (at paper scale a real forward took a minute and
    left 1.6 GB resident); the counts are those of a real forward."""
    touched: dict[int, nn.Module] = {}

    def note(module: nn.Module, _args: tuple) -> None:
        touched[id(module)] = module

    hooks = [m.register_forward_pre_hook(note) for m in net.modules()]
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as fake:
            fake_inputs = tuple(fake.from_tensor(t) for t in inputs)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                net(*fake_inputs)
    finally:
        for h in hooks:
            h.remove()
    params = {id(p): p.numel() for m in touched.values() for p in m.parameters(recurse=False)}
    return sum(params.values()), counter.get_total_flops() / 1e9


def activation_mb(cfg: ModelConfig, point: OperatingPoint, resolution: tuple[int, int], batch: int = 1) -> float:
    """Estimate: fp32 bytes of the largest set of activations one block keeps live at once (both streams,
    q/k/v, and the larger of the attention scores as lowered and the MLP hidden layer)."""
    t = cfg.transformer
    gh, gw = cfg.token_grid(point.ratio, resolution)
    n, s = gh * gw, gh * gw + t.text_len
    stats = ssba_stats(cfg, point, resolution)
    density = 1.0 if stats is None else 1.0 - stats.joint_sparsity
    scores = batch * t.num_heads * s * s * density
    floats = batch * s * t.hidden_size * 5 + max(scores, batch * n * t.mlp_hidden)
    return floats * 4 / 2**20


def inspect_models(
    models: Models,
    resolution: tuple[int, int] | None = None,
    attention: str | None = None,
    storage: WeightStorage | None = None,
) -> dict:
    """`storage`: how the weights are stored for the resident weight bytes (default float32, nothing quantized;
    the CLI passes a recipe's)."""
    cfg = models.cfg
    resolution = resolution or cfg.resolution
    check_resolution(cfg, resolution)
    attention = attention or DEFAULT_ATTENTION
    planned = weight_plan(cfg, list(operating_points(cfg)), resolution).footprint(storage or WeightStorage())
    device = next(models.transformer.parameters()).device.type
    points = []
    for point in operating_points(cfg):
        inputs = _example_inputs(cfg, resolution, device)
        net = models.transformer.operating_point(point, resolution, attention).to(device)
        params, gflops = count_cost(net, inputs)
        dense = models.transformer.operating_point(point, resolution, "dense").to(device)
        _, gflops_dense = count_cost(dense, inputs)
        gh, gw = cfg.token_grid(point.ratio, resolution)
        points.append(
            PointReport(
                name=point.name,
                compression_ratio=point.ratio,
                depth=point.depth,
                blocks=list(point.blocks),
                token_grid=[gh, gw],
                tokens=gh * gw,
                text_tokens=cfg.transformer.text_len,
                params=params,
                gflops=gflops,
                gflops_dense=gflops_dense,
                attention=attention if cfg.ssba.enabled else "dense",
                ssba=ssba_stats(cfg, point, resolution),
                activation_mb=activation_mb(cfg, point, resolution),
                weight_bytes=planned.points[point.name],
            )
        )
    parts = {
        name: sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
        for name, m in models.parts().items()
    }
    return {
        "resolution": list(resolution),
        "latent": list(cfg.latent_size(resolution)),
        "compression_ratios": list(cfg.elastic.compression_ratios),
        "depths": {k: list(v) for k, v in cfg.elastic.depths.items()},
        "parameters": parts,
        "operating_points": [asdict(p) for p in points],
        "weights": {
            "storage": asdict(storage or WeightStorage()),
            "bundle_bytes": planned.total,  # every point's weights once, plus decode's and encode_text's
            "methods": planned.others,
        },
        "totals": {
            "operating_points": len(points),
            "parameters": sum(parts.values()),
            "gflops_full": points[0].gflops,
            "gflops_lightest": min(p.gflops for p in points),
            "elastic_range": points[0].gflops / min(p.gflops for p in points),
        },
    }
