"""Flat-shape scenes with GenEval-style prompts: the grammar, a seeded sampler, a renderer and a parser.

A scene is 1-3 flat-coloured shapes (circle, square, upright triangle) on a black background. Every scene
carries a prompt from a small grammar with one of five categories:

- ``single_object``:     "a red circle"
- ``counting``:          "two blue squares", "three green triangles"
- ``two_objects``:       "a red circle and a blue square"
- ``position``:          "a red circle left of a green triangle" (also "right of", "above", "below")
- ``absolute_position``: "a yellow square on the left" ("on the right", "at the top", "at the bottom",
  "in the centre")

The scene holds exactly the objects its prompt names (no distractors). Layouts are ``"free"`` (any size and place
the prompt allows; held-out scenes always) or ``"slots"`` (the prompt's one canonical arrangement, slightly
jittered; the demo's training scenes, see docs/demo.md). Coordinates are normalised to [0, 1]
with y pointing down; ``Shape.cx, cy`` is the centre of the shape's bounding box and ``size`` its side
(every shape fits a square box: the triangle's base and height both equal ``size``).

Seeds: training scenes come from ``SeedSequence(seed, spawn_key=(0,))`` and held-out scenes from
``SeedSequence(seed, spawn_key=(1,))``, two independent streams for the same integer seed. The grammar is
small (21 single objects, 42 counts, 105 absolute positions), so held-out *prompts* can repeat training
prompts; the held-out *scenes* (layouts, sizes, and most two-object/relation prompts) are fresh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle")
# Fully saturated colours at well-separated hues, so the scorer can classify by hue alone.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),  # hue 0
    "orange": (255, 128, 0),  # hue 30
    "yellow": (255, 255, 0),  # hue 60
    "green": (0, 255, 0),  # hue 120
    "cyan": (0, 255, 255),  # hue 180
    "blue": (0, 42, 255),  # hue 230
    "purple": (191, 0, 255),  # hue 285
}
COLOURS = tuple(PALETTE)
BACKGROUND = (0, 0, 0)

CATEGORIES = ("single_object", "counting", "two_objects", "position", "absolute_position")
RELATIONS = ("left of", "right of", "above", "below")
REGIONS = ("left", "right", "top", "bottom", "centre")
REGION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
NUMBER_WORDS = {1: "a", 2: "two", 3: "three"}

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


@dataclass(frozen=True)
class ObjectSpec:
    """``count`` objects of one colour and kind."""

    colour: str
    kind: str
    count: int = 1

    @property
    def phrase(self) -> str:
        if self.count == 1:
            return f"{_article(self.colour)} {self.colour} {self.kind}"
        return f"{NUMBER_WORDS[self.count]} {self.colour} {self.kind}s"


@dataclass(frozen=True)
class PromptSpec:
    """Parsed prompt: ``relation`` reads "objects[0] <relation> objects[1]", ``region`` places objects[0]."""

    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    region: str | None = None

    @property
    def prompt(self) -> str:
        first = self.objects[0].phrase
        if self.category in ("single_object", "counting"):
            return first
        if self.category == "two_objects":
            return f"{first} and {self.objects[1].phrase}"
        if self.category == "position":
            return f"{first} {self.relation} {self.objects[1].phrase}"
        return f"{first} {REGION_PHRASES[self.region]}"


def _article(colour: str) -> str:
    return "an" if colour[0] in "aeiou" else "a"


# ---------------------------------------------------------------------------------------------- grammar


def vocabulary() -> list[str]:
    """Every word the grammar produces, sorted (for a word-level tokenizer)."""
    words = {"a", "an", "and", "of", "the", *NUMBER_WORDS.values(), *COLOURS}
    words |= set(KINDS) | {f"{kind}s" for kind in KINDS}
    for phrase in (*RELATIONS, *REGION_PHRASES.values()):
        words |= set(phrase.split())
    return sorted(words)


_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
# What may join two objects: "and" (no relation) or a relation.
_LINKS: dict[tuple[str, ...], str | None] = {("and",): None} | {tuple(r.split()): r for r in RELATIONS}
_REGION_WORDS = {tuple(p.split()): r for r, p in REGION_PHRASES.items()} | {("in", "the", "center"): "centre"}


def parse_prompt(prompt: str) -> PromptSpec:
    """Invert the grammar; ``parse_prompt(p).prompt == p`` for every prompt the grammar produces.

    Lenient only in form: case and punctuation are ignored, a single object may take any of a/an/one, and
    "center" is read as "centre". Raises ValueError naming the offending word for anything else.
    """
    words = re.sub(r"[^a-z ]", " ", prompt.lower()).split()
    if not words:
        raise ValueError("empty prompt")
    first, i = _parse_object(words, 0, prompt)
    rest = tuple(words[i:])
    if not rest:
        return PromptSpec("counting" if first.count > 1 else "single_object", (first,))
    if first.count > 1:
        raise ValueError(f"{prompt!r}: counts above one only appear alone, e.g. 'two red circles'")
    if rest in _REGION_WORDS:
        return PromptSpec("absolute_position", (first,), region=_REGION_WORDS[rest])
    width = next((w for w in (2, 1) if rest[:w] in _LINKS), 0)
    if not width:
        raise ValueError(
            f"{prompt!r}: expected 'and', a relation {RELATIONS} or a region "
            f"{tuple(REGION_PHRASES.values())} after {first.phrase!r}, got {' '.join(rest)!r}"
        )
    relation = _LINKS[rest[:width]]
    second, end = _parse_object(words, i + width, prompt)
    if end != len(words):
        raise ValueError(f"{prompt!r}: unexpected words after the second object: {' '.join(words[end:])!r}")
    if second.count > 1:
        raise ValueError(f"{prompt!r}: counts above one only appear alone, e.g. 'two red circles'")
    if (first.colour, first.kind) == (second.colour, second.kind):
        raise ValueError(f"{prompt!r}: the two objects must differ in colour or shape")
    return PromptSpec("two_objects" if relation is None else "position", (first, second), relation=relation)


def _parse_object(words: list[str], i: int, prompt: str) -> tuple[ObjectSpec, int]:
    """``<count> <colour> <kind>`` starting at words[i]; the kind is plural exactly when count > 1."""
    if len(words) < i + 3:
        raise ValueError(f"{prompt!r}: expected '<a|two|three> <colour> <shape>' at word {i + 1}")
    count_word, colour, noun = words[i : i + 3]
    if count_word not in _COUNT_WORDS:
        raise ValueError(f"{prompt!r}: expected a count (a, an, two, three), got {count_word!r}")
    if colour not in PALETTE:
        raise ValueError(f"{prompt!r}: unknown colour {colour!r}; expected one of {COLOURS}")
    count = _COUNT_WORDS[count_word]
    kind = noun[:-1] if count > 1 and noun.endswith("s") else noun
    if kind not in KINDS or (count > 1) != (noun != kind):
        expected = [f"{k}s" for k in KINDS] if count > 1 else list(KINDS)
        raise ValueError(f"{prompt!r}: after {count_word!r} expected a shape in {expected}, got {noun!r}")
    return ObjectSpec(colour, kind, count), i + 3


# ---------------------------------------------------------------------------------------------- sampler


def sample_scene(rng: np.random.Generator, category: str | None = None, layout: str = "free") -> Scene:
    """A scene of ``category`` (uniform over CATEGORIES when None), laid out consistently with its prompt.

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
    n: int, rng: np.random.Generator, layout: str = "free", weights: dict[str, int] | None = None
) -> list[Scene]:
    # Categories cycle in a fixed order, so any n gives the weighted shares (and prefixes are stable).
    cycle = category_cycle(weights)
    return [sample_scene(rng, cycle[i % len(cycle)], layout) for i in range(n)]


def training_scenes(n: int, seed: int, layout: str = "free", weights: dict[str, int] | None = None) -> list[Scene]:
    """The first n training scenes of ``seed`` (stream TRAIN_STREAM); a prefix of any longer call.

    ``weights`` repeats a category in the cycle (``{"position": 2}``: relations are 2 of every 6 scenes).
    """
    return _scenes(n, _stream(seed, TRAIN_STREAM), layout, weights)


def dataset(n: int, seed: int, size: int) -> list[tuple[np.ndarray, Scene]]:
    """``training_scenes(n, seed)`` rendered at ``size``: same seed, same scenes and same bytes."""
    return [(render(scene, size), scene) for scene in training_scenes(n, seed)]


def heldout_prompts(n: int, seed: int) -> list[Scene]:
    """n evaluation scenes from stream HELDOUT_STREAM, independent of every training stream of the same seed.

    Use ``scene.prompt`` to prompt the model and ``render(scene, size)`` for a ground-truth reference.
    """
    return _scenes(n, _stream(seed, HELDOUT_STREAM))
