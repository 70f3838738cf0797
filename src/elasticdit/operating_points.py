"""The elastic space: every (compression ratio, depth plan) pair is one operating point."""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig
from .errors import OperatingPointError


@dataclass(frozen=True)
class OperatingPoint:
    ratio: int
    depth: str  # the depth plan's name, e.g. "12"
    blocks: tuple[int, ...]  # block indices in the full model, in run order

    @property
    def name(self) -> str:
        return f"r{self.ratio}_d{self.depth}"

    @property
    def method(self) -> str:
        return f"denoise_{self.name}"


def operating_points(cfg: ModelConfig) -> list[OperatingPoint]:
    """All operating points, heaviest first: ratios ascending, then depths by block count descending."""
    depths = sorted(cfg.elastic.depths.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [
        OperatingPoint(ratio, name, tuple(blocks))
        for ratio in sorted(cfg.elastic.compression_ratios)
        for name, blocks in depths
    ]


def full_point(cfg: ModelConfig) -> OperatingPoint:
    return operating_points(cfg)[0]


def lightest_point(cfg: ModelConfig) -> OperatingPoint:
    points = operating_points(cfg)
    return max(points, key=lambda p: (p.ratio, -len(p.blocks)))


def select(cfg: ModelConfig, names: list[str] | None) -> list[OperatingPoint]:
    """The named operating points (all when names is empty), in the canonical order."""
    points = operating_points(cfg)
    if not names:
        return points
    by_name = {p.name: p for p in points}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise OperatingPointError(f"unknown operating point '{unknown[0]}'; valid: {', '.join(p.name for p in points)}")
    wanted = set(names)
    return [p for p in points if p.name in wanted]
