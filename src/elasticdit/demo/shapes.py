"""Flat-shape scenes for the demo's prompts (``prompts``): a seeded sampler, a renderer and the datasets.

A scene is 1-3 flat-coloured shapes (circle, square, upright triangle) on a black background, carrying a prompt of
the grammar in ``prompts`` (re-exported here). The scene holds exactly the objects its prompt names (no
distractors). Layouts are ``"free"`` (any size and place the prompt allows; held-out scenes always) or ``"slots"``
(the prompt's one canonical arrangement, slightly jittered; the demo's training scenes, see docs/demo.md).
Coordinates are normalised to [0, 1] with y pointing down; ``Shape.cx, cy`` is the centre of the shape's bounding
box and ``size`` its side (every shape fits a square box: the triangle's base and height both equal ``size``).

``training_scenes`` draws only prompts of the training split and ``heldout_prompts`` only held-out ones
(``prompts.is_heldout``), so no evaluation prompt string, in any phrasing, occurs in training.
Seeds: training scenes come from ``SeedSequence(seed, spawn_key=(0,))`` and held-out scenes from
``SeedSequence(seed, spawn_key=(1,))``, two independent streams for the same integer seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .prompts import (  # noqa: F401  (re-exported: the grammar is part of this module's interface)
    CATEGORIES,
    COLOURS,
    HELDOUT_MODULUS,
    KINDS,
    NUMBER_WORDS,
    PALETTE,
    REGION_PHRASES,
    REGIONS,
    RELATIONS,
    SPLITS,
    ObjectSpec,
    PromptSpec,
    all_prompts,
    canonical_prompt,
    is_heldout,
    parse_prompt,
    split_of,
    vocabulary,
)

BACKGROUND = (0, 0, 0)

MIN_SIZE, MAX_SIZE = 0.15, 0.3
MAX_SIZE_OF_THREE = 0.25  # three shapes of up to 0.3 rarely fit with gaps; keep counting scenes placeable
EDGE_MARGIN = 0.04  # gap between a shape's box and the image border
GAP = 0.06  # gap between the boxes of two shapes (along x or y)
REGION_MARGIN = 0.06  # absolute position: box centre at least this far inside its third
RELATION_SLOPE = 0.5  # relative position: |offset on the other axis| <= slope * |offset on the named axis|
# The "slots" layout (the demo's training scenes): every prompt has one canonical arrangement, jittered a little.
LAYOUTS = ("free", "slots")
SLOT_SIZE, SLOT_SIZE_OF_THREE = (0.26, 0.30), (0.18, 0.22)
SLOT_ROW = {1: (0.5,), 2: (0.27, 0.73), 3: (0.19, 0.5, 0.81)}  # centres of a row of 1-3 shapes
SLOT_JITTER = 0.02
SUPERSAMPLE = 4
MIN_RENDER_SIZE = 64
TRAIN_STREAM, HELDOUT_STREAM = 0, 1
_MAX_TRIES = 10_000


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cx: float
    cy: float
    size: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown shape kind {self.kind!r}; expected one of {KINDS}")
        if self.colour not in PALETTE:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {COLOURS}")


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    prompt: str
    category: str


# ---------------------------------------------------------------------------------------------- sampler


def sample_scene(
    rng: np.random.Generator, category: str | None = None, layout: str = "free", split: str | None = None
) -> Scene:
    """A scene of ``category`` (uniform over CATEGORIES when None), laid out consistently with its prompt.

    ``split`` ("train" or "heldout", see ``is_heldout``) draws the prompt from that split only (uniformly among
    its prompts of the category); None draws from the whole grammar.

    ``layout="free"``: sizes and places drawn anywhere the prompt allows. ``layout="slots"``: the prompt's one
    canonical arrangement (one shape in the centre or its region's middle; two or three in a row, left to right in
    the prompt's order, or top to bottom for "above"/"below"), every size and coordinate jittered by at most
    SLOT_JITTER. Both satisfy the same constraints, so the scorer passes either.
    """
    if category is None:
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    check_layout(layout)
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    spec = _sample_spec(rng, category)
    while split is not None and split_of(spec) != split:
        spec = _sample_spec(rng, category)
    place = _place_in_slots if layout == "slots" else _place
    return Scene(place(rng, spec), spec.prompt, category)


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def _sample_group(rng: np.random.Generator) -> tuple[str, str]:
    return COLOURS[int(rng.integers(len(COLOURS)))], KINDS[int(rng.integers(len(KINDS)))]


def _sample_spec(rng: np.random.Generator, category: str) -> PromptSpec:
    first = _sample_group(rng)
    if category == "single_object":
        return PromptSpec(category, (ObjectSpec(*first),))
    if category == "counting":
        return PromptSpec(category, (ObjectSpec(*first, count=int(rng.integers(2, 4))),))
    if category == "absolute_position":
        return PromptSpec(category, (ObjectSpec(*first),), region=REGIONS[int(rng.integers(len(REGIONS)))])
    second = _sample_group(rng)
    while second == first:
        second = _sample_group(rng)
    objects = (ObjectSpec(*first), ObjectSpec(*second))
    if category == "two_objects":
        return PromptSpec(category, objects)
    return PromptSpec(category, objects, relation=RELATIONS[int(rng.integers(len(RELATIONS)))])


def _place(rng: np.random.Generator, spec: PromptSpec) -> tuple[Shape, ...]:
    groups = [(o.colour, o.kind) for o in spec.objects for _ in range(o.count)]
    max_size = MAX_SIZE_OF_THREE if len(groups) == 3 else MAX_SIZE
    for _ in range(_MAX_TRIES):
        sizes = rng.uniform(MIN_SIZE, max_size, size=len(groups))
        if spec.region is not None:
            centres = [_region_centre(rng, spec.region, float(sizes[0]))]
        else:
            centres = [(_free_coord(rng, s), _free_coord(rng, s)) for s in sizes]
        shapes = tuple(
            Shape(kind, colour, float(x), float(y), float(s))
            for (colour, kind), (x, y), s in zip(groups, centres, sizes, strict=True)
        )
        if _separated(shapes) and (spec.relation is None or _clear_relation(*shapes, spec.relation)):
            return shapes
    raise RuntimeError(f"could not lay out {spec.prompt!r} in {_MAX_TRIES} tries")  # pragma: no cover


def _place_in_slots(rng: np.random.Generator, spec: PromptSpec) -> tuple[Shape, ...]:
    groups = [(o.colour, o.kind) for o in spec.objects for _ in range(o.count)]
    if spec.relation in ("right of", "below"):
        groups.reverse()  # the row runs left to right / top to bottom
    vertical = spec.relation in ("above", "below")
    low, high = SLOT_SIZE_OF_THREE if len(groups) == 3 else SLOT_SIZE
    for _ in range(_MAX_TRIES):
        sizes = [float(rng.uniform(low, high)) for _ in groups]
        if spec.region is not None:
            x_range, y_range = _region_ranges(spec.region, sizes[0])
            centres = [(sum(x_range) / 2, sum(y_range) / 2)]
        else:
            row = SLOT_ROW[len(groups)]
            centres = [(0.5, c) if vertical else (c, 0.5) for c in row]
        shapes = tuple(
            Shape(kind, colour, x + _jitter(rng), y + _jitter(rng), s)
            for (colour, kind), (x, y), s in zip(groups, centres, sizes, strict=True)
        )
        if spec.relation in ("right of", "below"):
            shapes = shapes[::-1]
        if _separated(shapes) and _inside(shapes) and _satisfies(shapes, spec):
            return shapes
    raise RuntimeError(f"could not lay out {spec.prompt!r} in {_MAX_TRIES} tries")  # pragma: no cover


def _jitter(rng: np.random.Generator) -> float:
    return float(rng.uniform(-SLOT_JITTER, SLOT_JITTER))


def _inside(shapes: tuple[Shape, ...]) -> bool:
    return all(s.size / 2 + EDGE_MARGIN <= c <= 1 - s.size / 2 - EDGE_MARGIN for s in shapes for c in (s.cx, s.cy))


def _satisfies(shapes: tuple[Shape, ...], spec: PromptSpec) -> bool:
    if spec.relation is not None:
        return _clear_relation(*shapes, spec.relation)
    if spec.region is not None:
        x_range, y_range = _region_ranges(spec.region, shapes[0].size)
        return x_range[0] <= shapes[0].cx <= x_range[1] and y_range[0] <= shapes[0].cy <= y_range[1]
    return True


def _free_coord(rng: np.random.Generator, size: float) -> float:
    return float(rng.uniform(size / 2 + EDGE_MARGIN, 1 - size / 2 - EDGE_MARGIN))


def _region_centre(rng: np.random.Generator, region: str, size: float) -> tuple[float, float]:
    x_range, y_range = _region_ranges(region, size)
    return float(rng.uniform(*x_range)), float(rng.uniform(*y_range))


def _region_ranges(region: str, size: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Box centre well inside the named third; the other coordinate in the middle band, so e.g. "on the left"
    is never also "at the top"."""
    low = (size / 2 + EDGE_MARGIN, 1 / 3 - REGION_MARGIN)
    high = (2 / 3 + REGION_MARGIN, 1 - size / 2 - EDGE_MARGIN)
    middle = (0.5 - (1 / 6 - REGION_MARGIN), 0.5 + (1 / 6 - REGION_MARGIN))
    return {
        "left": (low, middle),
        "right": (high, middle),
        "top": (middle, low),
        "bottom": (middle, high),
        "centre": (middle, middle),
    }[region]


def _separated(shapes: tuple[Shape, ...]) -> bool:
    for i, a in enumerate(shapes):
        for b in shapes[i + 1 :]:
            reach = (a.size + b.size) / 2 + GAP
            if abs(a.cx - b.cx) < reach and abs(a.cy - b.cy) < reach:
                return False
    return True


def _clear_relation(a: Shape, b: Shape, relation: str) -> bool:
    """a's box lies entirely on the named side of b's (plus GAP), mostly along that axis."""
    dx, dy = b.cx - a.cx, b.cy - a.cy  # positive: b is right of / below a
    axes = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}
    along, across = axes[relation]
    return along >= (a.size + b.size) / 2 + GAP and abs(across) <= RELATION_SLOPE * along


# ---------------------------------------------------------------------------------------------- renderer


def render(scene: Scene, size: int) -> np.ndarray:
    """uint8 (size, size, 3) RGB: 4x supersampled, box-filtered down (anti-aliased edges). Deterministic."""
    if size < MIN_RENDER_SIZE:
        raise ValueError(f"render size must be >= {MIN_RENDER_SIZE}, got {size}")
    big = size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for shape in scene.shapes:
        _draw_shape(draw, shape, big)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, side: int) -> None:
    half = shape.size / 2
    x0, x1 = (shape.cx - half) * side, (shape.cx + half) * side
    y0, y1 = (shape.cy - half) * side, (shape.cy + half) * side
    fill = PALETTE[shape.colour]
    if shape.kind == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape.kind == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([(shape.cx * side, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)


# ---------------------------------------------------------------------------------------------- datasets


def _stream(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def category_cycle(weights: dict[str, int] | None = None) -> list[str]:
    """CATEGORIES in order, each repeated by its integer weight (default 1): the order scenes cycle through."""
    weights = weights or {}
    unknown = sorted(set(weights) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown category {unknown[0]!r}; expected one of {CATEGORIES}")
    bad = [c for c, w in weights.items() if not isinstance(w, int) or w < 1]
    if bad:
        raise ValueError(f"category weight of {bad[0]!r} must be a positive integer, got {weights[bad[0]]!r}")
    return [c for c in CATEGORIES for _ in range(weights.get(c, 1))]


def _scenes(
    n: int,
    rng: np.random.Generator,
    layout: str = "free",
    weights: dict[str, int] | None = None,
    split: str | None = None,
) -> list[Scene]:
    # Categories cycle in a fixed order, so any n gives the weighted shares (and prefixes are stable).
    cycle = category_cycle(weights)
    return [sample_scene(rng, cycle[i % len(cycle)], layout, split) for i in range(n)]


def training_scenes(n: int, seed: int, layout: str = "free", weights: dict[str, int] | None = None) -> list[Scene]:
    """The first n training scenes of ``seed`` (stream TRAIN_STREAM); a prefix of any longer call.

    Only prompts of the training split: no held-out prompt (``is_heldout``) in any phrasing.
    ``weights`` repeats a category in the cycle (``{"position": 2}``: relations are 2 of every 6 scenes).
    """
    return _scenes(n, _stream(seed, TRAIN_STREAM), layout, weights, "train")


def dataset(n: int, seed: int, size: int) -> list[tuple[np.ndarray, Scene]]:
    """``training_scenes(n, seed)`` rendered at ``size``: same seed, same scenes and same bytes."""
    return [(render(scene, size), scene) for scene in training_scenes(n, seed)]


def heldout_prompts(n: int, seed: int) -> list[Scene]:
    """n evaluation scenes from stream HELDOUT_STREAM, every prompt of the held-out split (``is_heldout``), so no
    prompt string, in any phrasing, occurs among the training scenes of any seed. Free layouts; categories cycle.

    Use ``scene.prompt`` to prompt the model and ``render(scene, size)`` for a ground-truth reference.
    """
    return _scenes(n, _stream(seed, HELDOUT_STREAM), split="heldout")
