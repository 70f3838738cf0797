"""A GenEval-style pass/fail scorer for the flat-shape demo (see ``shapes``).

Detection (``detect``): the image (any size; a non-square one is squashed) is resized to a square of side
ANALYSIS_SIZE (area filter when shrinking) and median filtered (3x3), which absorbs mild blur and noise. A
pixel with chroma (max - min channel) below MIN_CHROMA is background, so a black, grey or white background
all work; other pixels take the palette colour of nearest hue, or none if no palette hue is within
MAX_HUE_DEVIATION. A 4-connected component of one colour is an object if it covers >= MIN_AREA of the
image, its box side is within [MIN_SIDE, MAX_SIDE] of the image side and not elongated, and its border is
mostly background (a patch of a colourful smear is not an object). Its kind comes from blur-stable cues
(vertical mass offset for triangles, filled box corners for squares); it is rejected if its IoU with that
kind's template inscribed in its box is below MIN_SHAPE_IOU.

Checks (``check``), as in GenEval's ``evaluate``:

- every object group the prompt names (colour + shape) must be found with *exactly* the requested count.
  GenEval enforces "exactly" only for counting prompts (at least 1 elsewhere); here every group is exact,
  so e.g. two red circles fail "a red circle". Objects the prompt does not name are ignored, as in GenEval.
- relative position: GenEval's rule on box centres: the offset, shrunk by POSITION_THRESHOLD x (sum of box
  sides) per axis, divided by the offset's length, must exceed 0.5 along the named direction.
- absolute position (not in GenEval): the box centre must lie in the named third of the image ("left":
  x < 1/3, "top": y < 1/3, ...); "centre" needs both coordinates in the middle third.

The strict rule (``check_strict``, ``PromptResult.strict``) passes only an image that GenEval's rule passes and that
holds nothing but the named objects: no object the prompt does not name, and no other coloured component of at least
MIN_AREA (a blob that is not a demo shape). A fixed collage of every colour and shape passes about half the prompts
under GenEval's rule (every single-object and most two-object prompts) and none under the strict one.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from .shapes import CATEGORIES, PALETTE, REGION_PHRASES, ObjectSpec, PromptSpec, parse_prompt

ANALYSIS_SIZE = 128
MIN_CHROMA = 96.0  # of 255: about half the palette's chroma, so blurred edges split evenly
MAX_HUE_DEVIATION = 25.0  # degrees
# Fraction of the image; the smallest demo shape (a 0.15 triangle) covers 0.011. Also a cheap pre-filter:
# noise leaves hundreds of specks that would otherwise each be measured.
MIN_AREA = 0.004
MIN_SIDE, MAX_SIDE = 0.07, 0.55  # demo shapes are 0.15-0.3 of the side
MAX_ELONGATION = 1.6  # long / short side of a component's box
# Blur cuts a triangle's apex, so its template fits worse than a blurred circle's or square's.
MIN_SHAPE_IOU = {"circle": 0.8, "square": 0.8, "triangle": 0.6}
MIN_ISOLATION = 0.85  # fraction of a component's border that must be background
TRIANGLE_OFFSET = 0.05  # |centroid - box centre| / height: 1/6 for a triangle, 0 for a circle or square
# Filled fraction of the box corners (outside CORNER_RADIUS x the inscribed circle): ~1 square, ~0 circle. The
# radius sits just outside the circle so that its jagged pixel edge does not count as corner.
CORNER_RADIUS = 1.05
SQUARE_CORNER_FILL = 0.12
POSITION_THRESHOLD = 0.1  # GenEval's value


@dataclass(frozen=True)
class Detection:
    """One object; coordinates normalised to [0, 1] (y down), box centre and box size."""

    colour: str
    kind: str
    cx: float
    cy: float
    width: float
    height: float
    iou: float


@dataclass(frozen=True)
class Analysis:
    """What ``analyse`` sees: the demo shapes, and how many other coloured components of >= MIN_AREA there are."""

    detections: tuple[Detection, ...]
    unrecognised: int


@dataclass(frozen=True)
class PromptResult:
    """``passed``: GenEval's rule (``check``); ``strict``: that and nothing but the named objects (``check_strict``);
    ``reason``: why the first of them to fail failed, or what was seen."""

    prompt: str
    category: str
    passed: bool
    reason: str
    strict: bool


@dataclass(frozen=True)
class Report:
    results: tuple[PromptResult, ...]

    @property
    def accuracy(self) -> float:
        """Fraction of all prompts that passed GenEval's rule."""
        return _mean(r.passed for r in self.results)

    @property
    def strict_accuracy(self) -> float:
        """Fraction of all prompts that passed the strict rule."""
        return _mean(r.strict for r in self.results)

    @property
    def per_category(self) -> dict[str, float]:
        """Accuracy (GenEval's rule) per category present, in CATEGORIES order."""
        return {c: _mean(r.passed for r in self.results if r.category == c) for c in self._categories()}

    @property
    def strict_per_category(self) -> dict[str, float]:
        return {c: _mean(r.strict for r in self.results if r.category == c) for c in self._categories()}

    @property
    def mean_category_accuracy(self) -> float:
        """GenEval's overall score: the unweighted mean of the per-category accuracies."""
        return _mean(self.per_category.values())

    @property
    def strict_mean_category_accuracy(self) -> float:
        return _mean(self.strict_per_category.values())

    def _categories(self) -> list[str]:
        present = {r.category for r in self.results}
        return [c for c in CATEGORIES if c in present]

    def to_dict(self, include_results: bool = True) -> dict[str, Any]:
        strict = self.strict_per_category
        out: dict[str, Any] = {
            "n": len(self.results),
            "accuracy": self.accuracy,
            "mean_category_accuracy": self.mean_category_accuracy,
            "strict_accuracy": self.strict_accuracy,
            "strict_mean_category_accuracy": self.strict_mean_category_accuracy,
            "per_category": {
                c: {"n": sum(r.category == c for r in self.results), "accuracy": acc, "strict_accuracy": strict[c]}
                for c, acc in self.per_category.items()
            },
        }
        if include_results:
            out["results"] = [dataclasses.asdict(r) for r in self.results]
        return out


def _mean(values: Iterable[float]) -> float:
    numbers = [float(v) for v in values]
    return sum(numbers) / len(numbers) if numbers else 0.0


# ---------------------------------------------------------------------------------------------- public API


def score(image: np.ndarray, prompt: str) -> PromptResult:
    """Pass/fail of one image against one prompt under both rules (ValueError if the prompt is outside the
    grammar)."""
    spec = parse_prompt(prompt)
    seen = analyse(image)
    passed, reason = check(spec, seen.detections)
    strict, strict_reason = check_strict(spec, seen)
    return PromptResult(prompt, spec.category, passed, reason if not passed else strict_reason, strict)


def evaluate(images: Sequence[np.ndarray], prompts: Sequence[str]) -> Report:
    """Score image i against prompt i."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    return Report(tuple(score(image, prompt) for image, prompt in zip(images, prompts, strict=True)))


def detect(image: np.ndarray) -> list[Detection]:
    """The objects in a uint8 (H, W, 3) RGB image, in raster order of their first pixel."""
    return list(analyse(image).detections)


def analyse(image: np.ndarray) -> Analysis:
    """The objects in a uint8 (H, W, 3) RGB image (raster order of their first pixel), and the number of other
    coloured components of at least MIN_AREA (blobs that are not demo shapes)."""
    rgb = _prepare(image)
    chroma = _chroma(rgb)
    colours = _classify_pixels(rgb, chroma)
    labels = _connected_components(colours)
    ids, areas = np.unique(labels[labels >= 0], return_counts=True)
    names = list(PALETTE)
    detections, unrecognised = [], 0
    for label in ids[areas >= MIN_AREA * labels.size]:
        detection = _describe(labels == label, names[colours.flat[label]], chroma < MIN_CHROMA)
        if detection is None:
            unrecognised += 1
        else:
            detections.append(detection)
    return Analysis(tuple(detections), unrecognised)


def check(spec: PromptSpec, detections: Sequence[Detection]) -> tuple[bool, str]:
    """Whether detections satisfy the parsed prompt, and why not (or a summary of what was found)."""
    found = [[d for d in detections if (d.colour, d.kind) == (o.colour, o.kind)] for o in spec.objects]
    for obj, matches in zip(spec.objects, found, strict=True):
        if len(matches) != obj.count:
            return False, f"expected {obj.count}x {_name(obj)}, found {len(matches)} ({_summary(detections)})"
    first = found[0][0]
    if spec.relation is not None:
        second = found[1][0]
        relations = relative_position(first, second)
        if spec.relation not in relations:
            seen = " and ".join(sorted(relations)) or "no clear relation"
            return False, f"expected {_name(first)} {spec.relation} {_name(second)}, got {seen}"
    if spec.region is not None and not in_region(first, spec.region):
        where = f"box centre ({first.cx:.2f}, {first.cy:.2f})"
        return False, f"expected {_name(first)} {REGION_PHRASES[spec.region]}, got {where}"
    return True, f"ok; saw {_summary(detections)}"


def check_strict(spec: PromptSpec, seen: Analysis) -> tuple[bool, str]:
    """GenEval's rule (``check``), and nothing in the image but the named objects: no unnamed object and no
    unrecognised coloured blob."""
    passed, reason = check(spec, seen.detections)
    if not passed:
        return False, reason
    named = {(o.colour, o.kind) for o in spec.objects}
    extra = [d for d in seen.detections if (d.colour, d.kind) not in named]
    if extra or seen.unrecognised:
        blobs = f"{seen.unrecognised} unrecognised blob(s)" if seen.unrecognised else ""
        found = ", ".join(x for x in (_summary(extra) if extra else "", blobs) if x)
        return False, f"passes GenEval's rule, but the image also holds {found}"
    return True, reason


def _name(obj: Detection | ObjectSpec) -> str:
    return f"{obj.colour} {obj.kind}"


def relative_position(a: Detection, b: Detection) -> set[str]:
    """GenEval's relation set of a relative to b, from box centres and sizes."""
    offset = np.array([a.cx - b.cx, a.cy - b.cy])
    dims = np.array([a.width + b.width, a.height + b.height])
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def in_region(d: Detection, region: str) -> bool:
    middle = 1 / 3 <= d.cx <= 2 / 3, 1 / 3 <= d.cy <= 2 / 3
    return {
        "left": d.cx < 1 / 3,
        "right": d.cx > 2 / 3,
        "top": d.cy < 1 / 3,
        "bottom": d.cy > 2 / 3,
        "centre": all(middle),
    }[region]


def _summary(detections: Sequence[Detection]) -> str:
    counts = Counter(_name(d) for d in detections)
    return ", ".join(f"{n}x {name}" for name, n in sorted(counts.items())) or "nothing"


# ---------------------------------------------------------------------------------------------- detection


def _prepare(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(np.ascontiguousarray(image))
    shrinking = min(pil.size) >= ANALYSIS_SIZE
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    pil = pil.resize((ANALYSIS_SIZE, ANALYSIS_SIZE), resample).filter(ImageFilter.MedianFilter(3))
    return np.asarray(pil, dtype=np.float32)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Opponent-colour hue angle in degrees [0, 360) of float RGB (..., 3); arbitrary where chroma is 0."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) % 360


def _chroma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)


def _hue_table() -> np.ndarray:
    """Palette index for each whole degree of hue, -1 where no palette hue is within MAX_HUE_DEVIATION."""
    palette_hues = _hue(np.array(list(PALETTE.values()), dtype=np.float64))
    distance = np.abs(np.arange(360)[:, None] - palette_hues)
    distance = np.minimum(distance, 360 - distance)
    return np.where(distance.min(axis=1) <= MAX_HUE_DEVIATION, distance.argmin(axis=1), -1)


_HUE_TABLE = _hue_table()


def _classify_pixels(rgb: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Palette index per pixel, -1 for background or an off-palette hue."""
    degrees = np.rint(_hue(rgb)).astype(np.int64) % 360
    return np.where(chroma >= MIN_CHROMA, _HUE_TABLE[degrees], -1)


def _connected_components(classes: np.ndarray) -> np.ndarray:
    """4-connected components of one non-negative class, labelled by their smallest flat index; -1 elsewhere.

    Min-label propagation with pointer jumping, vectorised (no scipy dependency).
    """
    h, w = classes.shape
    foreground = classes >= 0
    none = h * w
    labels = np.where(foreground, np.arange(h * w).reshape(h, w), none)
    joined_v = foreground[1:] & (classes[1:] == classes[:-1])  # pixel (i + 1, j) joins (i, j)
    joined_h = foreground[:, 1:] & (classes[:, 1:] == classes[:, :-1])
    fg_flat = foreground.ravel()
    while True:
        new = labels.copy()
        np.minimum(new[1:], np.where(joined_v, labels[:-1], none), out=new[1:])
        np.minimum(new[:-1], np.where(joined_v, labels[1:], none), out=new[:-1])
        np.minimum(new[:, 1:], np.where(joined_h, labels[:, :-1], none), out=new[:, 1:])
        np.minimum(new[:, :-1], np.where(joined_h, labels[:, 1:], none), out=new[:, :-1])
        flat = new.ravel()
        flat[fg_flat] = flat[flat[fg_flat]]  # a label is a pixel of the same component: jump to its label
        if np.array_equal(new, labels):
            return np.where(foreground, labels, -1)
        labels = new


def _describe(mask: np.ndarray, colour: str, background: np.ndarray) -> Detection | None:
    """A component's box and shape, or None if it is not a plausible demo shape on the plain background."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = mask.shape[0]
    height, width = (y1 - y0) / side, (x1 - x0) / side
    long, short = max(width, height), min(width, height)
    if not MIN_SIDE <= long <= MAX_SIDE or long > MAX_ELONGATION * short:
        return None
    if _isolation(mask, background) < MIN_ISOLATION:
        return None
    kind, iou = _classify_shape(mask[y0:y1, x0:x1])
    if iou < MIN_SHAPE_IOU[kind]:
        return None
    return Detection(colour, kind, (x0 + x1) / 2 / side, (y0 + y1) / 2 / side, width, height, iou)


def _isolation(mask: np.ndarray, background: np.ndarray) -> float:
    """Fraction of the pixels bordering the component (8-neighbours) that are background.

    A drawn shape is surrounded by background; a patch cut out of a colourful smear by the hue windows is
    bordered by pixels of other hues.
    """
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return float(background[grown & ~mask].mean())


def _classify_shape(crop: np.ndarray) -> tuple[str, float]:
    """(kind, IoU with that kind's template inscribed in the box) of a component cropped to its box.

    Blur rounds corners, so the kind comes from blur-stable cues rather than the best IoU: a triangle's mass
    sits off-centre vertically (centroid at 2/3 of its height), and a square fills the box corners outside
    the inscribed circle that a circle leaves empty. The IoU then rejects blobs that resemble neither.
    """
    h, w = crop.shape
    y = ((np.arange(h) + 0.5) / h)[:, None]
    x = ((np.arange(w) + 0.5) / w)[None, :]
    circle = (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    corners = (x - 0.5) ** 2 + (y - 0.5) ** 2 > 0.25 * CORNER_RADIUS**2
    offset = (np.nonzero(crop)[0] + 0.5).mean() / h - 0.5
    if abs(offset) >= TRIANGLE_OFFSET:
        kind, template = "triangle", np.abs(x - 0.5) <= (y if offset > 0 else 1 - y) / 2
    elif crop[np.broadcast_to(corners, crop.shape)].mean() >= SQUARE_CORNER_FILL:
        kind, template = "square", np.ones_like(crop)
    else:
        kind, template = "circle", circle
    return kind, float((crop & template).sum() / (crop | template).sum())
