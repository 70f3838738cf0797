"""Step schedules: which operating point runs at which denoising step (docs/design.md, "Step schedules").

A schedule is a list of phases, each an operating point and the share of the steps it runs, written
`r4_d3:0.3,r1_d6:0.7`; a plain point name (`r1_d6`) is the one-phase schedule. With N steps and the cumulative
shares C_1 < ... < C_m = 1, step i (0-based) runs phase min{k : (i + 0.5) / N < C_k}. Every runtime (the PyTorch
reference, ExecuTorch, ONNX Runtime, an app) applies this one rule, so a schedule and N name the same per-step
points everywhere. In floating point: C_k = floor(1e9 * (s_1 + ... + s_k) + 0.5) / 1e9, the running sum taken
left to right in double precision, and C_m = 1; rounding to 9 decimals makes a step midpoint that equals a
boundary exactly (0.1 + 0.2 = 0.30000000000000004 against 1.5 / 5) compare as the exact shares say.

Parsing and the step rule live here and nowhere else; checking a schedule against what a source holds
(`check`) takes plain data (point name -> the resolutions it is available at), so the reference, a bundle and
the exporter ask the same question the same way.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import (
    PointNotInBundleError,
    PointResolutionError,
    ScheduleSharesError,
    ScheduleSyntaxError,
    UnknownPointError,
)

SHARE_TOLERANCE = 1e-6  # |sum of shares - 1| allowed (decimal shares such as 0.1 + 0.2 + 0.7 are not exact)
POINT_NAME = re.compile(r"^r\d+_d[^_:,=\s]+$")  # operating_points.OperatingPoint.name: r{ratio}_d{depth}
SCHEDULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

Resolution = tuple[int, int]


@dataclass(frozen=True)
class Phase:
    point: str
    share: float


@dataclass(frozen=True)
class Schedule:
    phases: tuple[Phase, ...]
    name: str = ""  # the manifest's name for it, when it has one

    @property
    def points(self) -> list[str]:
        """The distinct points, in the order they first run."""
        return list(dict.fromkeys(p.point for p in self.phases))

    @property
    def single(self) -> str | None:
        """The point, when the schedule is one point for every step."""
        return self.points[0] if len(self.points) == 1 else None

    @property
    def spec(self) -> str:
        """The canonical text: the point name for one phase, `POINT:SHARE,...` otherwise."""
        if len(self.phases) == 1:
            return self.phases[0].point
        return ",".join(f"{p.point}:{p.share:g}" for p in self.phases)

    @property
    def label(self) -> str:
        return self.name or self.spec

    def cumulative(self) -> list[float]:
        """C_1..C_m as the step rule takes them (module docstring): rounded to 9 decimals, the last exactly 1."""
        total, out = 0.0, []
        for p in self.phases:
            total += p.share
            out.append(math.floor(total * 1e9 + 0.5) / 1e9)
        out[-1] = 1.0
        return out

    def phase_per_step(self, steps: int) -> list[int]:
        """The phase index each of `steps` steps runs (the rule in the module docstring)."""
        if steps < 1:
            raise ScheduleSharesError(f"a schedule needs at least one step, got {steps}")
        c = self.cumulative()
        return [next(k for k, ck in enumerate(c) if (i + 0.5) / steps < ck) for i in range(steps)]

    def step_points(self, steps: int) -> list[str]:
        """The operating point of every step."""
        return [self.phases[k].point for k in self.phase_per_step(steps)]

    def steps_per_point(self, steps: int) -> dict[str, int]:
        """How many of `steps` steps each point runs (points in first-run order; a point may get 0)."""
        counts = dict.fromkeys(self.points, 0)
        for point in self.step_points(steps):
            counts[point] += 1
        return counts

    def to_manifest(self) -> list[dict[str, Any]]:
        return [{"point": p.point, "share": p.share} for p in self.phases]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name or None, "spec": self.spec, "phases": self.to_manifest()}


def one_point(point: str) -> Schedule:
    return Schedule((Phase(point, 1.0),))


def _share(value: str | float, where: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise ScheduleSharesError(f"{where}: share '{value}' is not a number") from None
    if not math.isfinite(share) or share <= 0:
        raise ScheduleSharesError(f"{where}: share {value} must be a number above 0")
    return share


def _checked(phases: list[Phase], where: str, name: str = "") -> Schedule:
    for p in phases:
        if not POINT_NAME.match(p.point):
            raise UnknownPointError(f"{where}: '{p.point}' is not an operating point name (r<ratio>_d<depth>)")
    total = math.fsum(p.share for p in phases)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        shares = " + ".join(f"{p.share:g}" for p in phases)
        raise ScheduleSharesError(f"{where}: the shares sum to {total:g} ({shares}), not 1")
    return Schedule(tuple(phases), name)


def parse_schedule(spec: str, name: str = "") -> Schedule:
    """`POINT` (the one-phase schedule) or `POINT:SHARE,POINT:SHARE,...` with shares summing to 1."""
    text = spec.strip()
    where = f"schedule '{spec}'"
    if not text:
        raise ScheduleSyntaxError("a schedule is empty: give POINT or POINT:SHARE,POINT:SHARE,...")
    parts = [part.strip() for part in text.split(",")]
    if len(parts) == 1 and ":" not in parts[0]:
        return _checked([Phase(parts[0], 1.0)], where, name)
    phases = []
    for part in parts:
        point, colon, share = part.partition(":")
        if not colon or not point.strip() or not share.strip() or ":" in share:
            raise ScheduleSyntaxError(f"{where}: '{part}' is not POINT:SHARE (every phase of a schedule needs both)")
        phases.append(Phase(point.strip(), _share(share.strip(), where)))
    return _checked(phases, where, name)


def parse_named(text: str) -> Schedule:
    """`NAME=SPEC` (what `export --schedule` takes)."""
    name, eq, spec = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise ScheduleSyntaxError(f"'{text}' is not NAME=SPEC (e.g. fast=r4_d3:0.3,r1_d6:0.7)")
    if not SCHEDULE_NAME.match(name) or POINT_NAME.match(name):
        raise ScheduleSyntaxError(
            f"schedule name '{name}' must start with a letter, hold only letters, digits, '_', '.', '-', and not "
            "look like an operating point (r<ratio>_d<depth>)"
        )
    return parse_schedule(spec, name)


def parse_named_all(texts: Iterable[str]) -> dict[str, Schedule]:
    """Several `NAME=SPEC`, names unique, in the order given."""
    named: dict[str, Schedule] = {}
    for text in texts:
        schedule = parse_named(text)
        if schedule.name in named:
            raise ScheduleSyntaxError(f"schedule name '{schedule.name}' is given twice")
        named[schedule.name] = schedule
    return named


def from_manifest(name: str, phases: Any, where: str) -> Schedule:
    """A manifest's `schedules[NAME]` list of {"point", "share"} (named errors, like `parse_schedule`)."""
    if not isinstance(phases, list) or not phases:
        raise ScheduleSyntaxError(f"{where}: schedule '{name}' must be a non-empty list of {{point, share}}")
    out = []
    for p in phases:
        if not isinstance(p, dict) or not isinstance(p.get("point"), str) or "share" not in p:
            raise ScheduleSyntaxError(f"{where}: schedule '{name}' has a phase that is not {{point, share}}: {p!r}")
        if isinstance(p["share"], bool) or not isinstance(p["share"], int | float):
            raise ScheduleSharesError(f"{where}: schedule '{name}': share {p['share']!r} is not a number")
        out.append(Phase(p["point"], _share(p["share"], f"{where}: schedule '{name}'")))
    if not SCHEDULE_NAME.match(name) or POINT_NAME.match(name):
        raise ScheduleSyntaxError(f"{where}: '{name}' is not a valid schedule name")
    return _checked(out, f"{where}: schedule '{name}'", name)


def check(
    schedule: Schedule,
    available: Mapping[str, Sequence[Resolution]],
    resolution: Resolution | None = None,
    model_points: Iterable[str] | None = None,
    where: str = "the bundle",
) -> Schedule:
    """`schedule` runs on a source that holds each point of `available` at the listed resolutions, at
    `resolution` (None: any). `model_points` is the model's whole space when known (a checkpoint, an export):
    a name outside it is unknown, a name inside it but not available is missing from the bundle. Returns it."""
    space = list(model_points) if model_points is not None else None
    for point in schedule.points:
        if space is not None and point not in space:
            raise UnknownPointError(
                f"schedule '{schedule.label}': unknown operating point '{point}'; the model has {', '.join(space)}"
            )
        if point not in available:
            raise PointNotInBundleError(
                f"schedule '{schedule.label}': {where} has no operating point '{point}' (it holds "
                f"{', '.join(available)}); export it with that point to use this schedule"
            )
        at = [tuple(r) for r in available[point]]
        if resolution is not None and tuple(resolution) not in at:
            held = ", ".join(f"{h}x{w}" for h, w in at)
            raise PointResolutionError(
                f"schedule '{schedule.label}': {where} holds '{point}' only at {held}, not at "
                f"{resolution[0]}x{resolution[1]}"
            )
    return schedule


def resolve(
    text: str | Schedule | None,
    default_point: str,
    named: Mapping[str, Schedule] | None = None,
) -> Schedule:
    """What `--op` / `--schedule` name: None -> the default point; a name of `named` (the manifest's schedules);
    else a spec (`parse_schedule`). Not checked against a source: `check` does that."""
    if isinstance(text, Schedule):
        return text
    if text is None or not str(text).strip():
        return one_point(default_point)
    if named and text.strip() in named:
        return named[text.strip()]
    if not any(c in text for c in ":,"):
        return one_point(text.strip())  # a plain point name: the source names it unknown if it is
    return parse_schedule(text)


def gflops_per_image(schedule: Schedule, steps: int, gflops: Mapping[str, float], guidance: float) -> float:
    """Compute of one image's denoising: the GFLOPs of the point each step runs (batch 1), twice per step under
    classifier-free guidance (guidance != 1: a conditional and an unconditional pass, batched or not)."""
    calls = 2 if guidance != 1.0 else 1
    return sum(gflops[p] for p in schedule.step_points(steps)) * calls


def ordering(schedule: Schedule, cost: Mapping[str, float]) -> str:
    """`single`, `cheap-first` (each phase costs at least the one before), `rich-first` (at most) or `mixed`."""
    costs = [cost[p.point] for p in schedule.phases]
    if len(set(schedule.points)) == 1:
        return "single"
    if all(a <= b for a, b in itertools.pairwise(costs)):
        return "cheap-first"
    if all(a >= b for a, b in itertools.pairwise(costs)):
        return "rich-first"
    return "mixed"
