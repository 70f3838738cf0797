"""The GenEval-style demo scorer (elasticdit.demo.scorer) on ground truth, degraded renders and garbage, under
GenEval's rule and the strict rule (nothing but the named objects)."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.random import Generator
from PIL import Image, ImageDraw, ImageFilter

from elasticdit.demo.scorer import (
    Analysis,
    Detection,
    PromptResult,
    Report,
    analyse,
    check,
    check_strict,
    detect,
    evaluate,
    in_region,
    relative_position,
    score,
)
from elasticdit.demo.shapes import (
    CATEGORIES,
    COLOURS,
    KINDS,
    PALETTE,
    REGIONS,
    RELATIONS,
    ObjectSpec,
    PromptSpec,
    Scene,
    Shape,
    heldout_prompts,
    parse_prompt,
    render,
    sample_scene,
    training_scenes,
)
from elasticdit.evaluation import PROMPT_SEED

SIZES = (64, 128, 256)
N_PER_SIZE = 200  # 40 prompts per category and size: 600 ground-truth prompts per condition
MIN_ACCURACY = 0.97
MAX_GARBAGE_PASS = 0.10


def degrade(image: np.ndarray, rng: Generator, blur: float = 1 / 128, noise: float = 12.0) -> np.ndarray:
    """Gaussian blur with sigma = blur x side, then additive Gaussian noise of std ``noise`` (of 255)."""
    blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(blur * image.shape[0]))
    noisy = np.asarray(blurred, dtype=np.float32) + rng.normal(0.0, noise, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s}px")
def ground_truth(request) -> tuple[int, list[Scene], list[np.ndarray]]:
    size = request.param
    scenes = heldout_prompts(N_PER_SIZE, seed=size)
    return size, scenes, [render(scene, size) for scene in scenes]


def _assert_accurate(report: Report, label: str) -> None:
    """Under both rules: the strict one must not fail what is drawn right."""
    failures = [f"{r.prompt!r}: {r.reason}" for r in report.results if not r.strict]
    assert report.accuracy >= MIN_ACCURACY, f"{label}: {report.to_dict(False)}\n" + "\n".join(failures[:10])
    assert report.strict_accuracy >= MIN_ACCURACY, f"{label}: {report.to_dict(False)}\n" + "\n".join(failures[:10])
    assert set(report.per_category) == set(CATEGORIES)
    assert min(report.per_category.values()) >= 0.9, f"{label}: {report.per_category}"
    assert min(report.strict_per_category.values()) >= 0.9, f"{label}: {report.strict_per_category}"


def test_ground_truth_renders_pass(ground_truth):
    size, scenes, images = ground_truth
    _assert_accurate(evaluate(images, [s.prompt for s in scenes]), f"clean {size}px")


def test_slot_layout_renders_pass():
    """The demo trains on canonical slot layouts; the scorer must accept those arrangements too."""
    scenes = training_scenes(200, seed=3, layout="slots")
    _assert_accurate(evaluate([render(s, 128) for s in scenes], [s.prompt for s in scenes]), "slots 128px")


def test_blurred_noisy_ground_truth_renders_pass(ground_truth):
    size, scenes, images = ground_truth
    rng = np.random.default_rng(size)
    degraded = [degrade(image, rng) for image in images]
    _assert_accurate(evaluate(degraded, [s.prompt for s in scenes]), f"blur + noise {size}px")


def test_stronger_blur_and_noise_still_mostly_pass():
    """sigma = side / 64 and noise std 20: blurrier than mild, about what a small diffusion model produces."""
    scenes = heldout_prompts(100, seed=1)
    rng = np.random.default_rng(0)
    images = [degrade(render(scene, 128), rng, blur=1 / 64, noise=20.0) for scene in scenes]
    report = evaluate(images, [s.prompt for s in scenes])
    assert report.accuracy >= 0.95 and report.strict_accuracy >= 0.95


# ---------------------------------------------------------------------------------------------- strict rule


def collage(size: int = 128) -> np.ndarray:
    """One fixed image of all 21 colour x shape combinations, in a 5-column grid: it names every object once."""
    groups = [(colour, kind) for colour in COLOURS for kind in KINDS]
    shapes = tuple(
        Shape(kind, colour, 0.1 + 0.2 * (i % 5), 0.1 + 0.2 * (i // 5), 0.12) for i, (colour, kind) in enumerate(groups)
    )
    return render(Scene(shapes, "collage", "none"), size)


@pytest.fixture(scope="module")
def eval_prompts() -> list[str]:
    """The prompts `elasticdit eval` scores (its default 64, seed PROMPT_SEED)."""
    return [s.prompt for s in heldout_prompts(64, PROMPT_SEED)]


def test_a_fixed_collage_passes_geneval_often_and_the_strict_rule_never(eval_prompts):
    image = collage()
    assert Counter((d.colour, d.kind) for d in detect(image)) == Counter((c, k) for c in COLOURS for k in KINDS)
    report = evaluate([image] * len(eval_prompts), eval_prompts)
    # GenEval's rule ignores unnamed objects, so one image of everything passes every single-object and
    # two-object prompt (0.547 on these prompts; the issue measured 0.516 with another collage on the old ones)
    assert report.accuracy >= 0.4, report.to_dict(False)
    assert report.per_category["single_object"] == report.per_category["two_objects"] == 1.0
    assert report.strict_accuracy <= 0.05, report.to_dict(False)
    failed = next(r for r in report.results if r.passed and not r.strict)
    assert "passes GenEval's rule, but the image also holds" in failed.reason


def test_blank_and_noise_images_fail_the_strict_rule(eval_prompts):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in eval_prompts]
    blank = [np.zeros((128, 128, 3), np.uint8)] * len(eval_prompts)
    for images in (blank, noise):
        report = evaluate(images, eval_prompts)
        assert report.strict_accuracy <= 0.05 and report.accuracy <= 0.05, report.to_dict(False)


@pytest.mark.parametrize("seed", [PROMPT_SEED, 777])
def test_a_ground_truth_render_of_every_evaluation_prompt_passes_the_strict_rule(seed: int):
    """So the strict rule does not fail everything: what the prompt names, drawn alone, passes."""
    scenes = heldout_prompts(64, seed)
    report = evaluate([render(s, 128) for s in scenes], [s.prompt for s in scenes])
    assert [r.reason for r in report.results if not r.strict] == []
    assert set(report.strict_per_category) == set(CATEGORIES)


def test_strict_rule_refuses_unnamed_objects_and_unrecognised_blobs():
    def found(*groups: tuple[str, str, float]) -> tuple[Detection, ...]:
        return tuple(Detection(c, k, x, 0.5, 0.2, 0.2, 1.0) for c, k, x in groups)

    spec = parse_prompt("a red circle left of a blue square")
    named = found(("red", "circle", 0.2), ("blue", "square", 0.7))
    assert check_strict(spec, Analysis(named, 0))[0]
    extra = Analysis((*named, *found(("green", "triangle", 0.5))), 0)
    assert check(spec, extra.detections)[0]  # GenEval's rule ignores it
    passed, reason = check_strict(spec, extra)
    assert not passed and reason.endswith("also holds 1x green triangle")
    passed, reason = check_strict(spec, Analysis(named, 2))
    assert not passed and reason.endswith("also holds 2 unrecognised blob(s)")
    assert not check_strict(spec, Analysis(named[:1], 0))[0]  # what GenEval's rule fails, the strict one fails
    # in an image: a ragged blob beside the named circle is not a shape, but it is something the prompt did not ask for
    image = render(Scene((Shape("circle", "red", 0.3, 0.5, 0.25),), "a red circle", "single_object"), 128).copy()
    assert score(image, "a red circle").strict
    image[20:50, 80:90] = PALETTE["blue"]
    image[40:50, 90:120] = PALETTE["blue"]
    seen = analyse(image)
    assert [(d.colour, d.kind) for d in seen.detections] == [("red", "circle")] and seen.unrecognised == 1
    result = score(image, "a red circle")
    assert result.passed and not result.strict


def test_uniform_noise_fails(ground_truth):
    size, scenes, _ = ground_truth
    rng = np.random.default_rng(size)
    noise = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in scenes[:60]]
    report = evaluate(noise, [s.prompt for s in scenes[:60]])
    assert report.accuracy <= MAX_GARBAGE_PASS, report.to_dict(False)
    assert sum(len(detect(image)) for image in noise[:20]) == 0


def test_smooth_colour_smears_rarely_pass():
    """Low-frequency colour noise has many palette-coloured blobs, but they are not shapes on a background."""
    rng = np.random.default_rng(0)
    scenes = heldout_prompts(150, seed=2)
    found = []
    for cells in rng.integers(3, 17, len(scenes)):
        coarse = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
        found.append(detect(np.asarray(coarse.resize((128, 128), Image.Resampling.BICUBIC))))
    passed = [check(parse_prompt(s.prompt), f)[0] for s, f in zip(scenes, found, strict=True)]
    assert np.mean(passed) <= MAX_GARBAGE_PASS
    # Without the background-border test there are ~7 "objects" per smear.
    assert np.mean([len(f) for f in found]) <= 2.0


def _ring(draw: ImageDraw.ImageDraw, n: int) -> None:
    draw.ellipse((0.3 * n, 0.3 * n, 0.6 * n, 0.6 * n), fill=RED)
    draw.ellipse((0.36 * n, 0.36 * n, 0.54 * n, 0.54 * n), fill=0)


def _frame(draw: ImageDraw.ImageDraw, n: int) -> None:
    draw.rectangle((0.3 * n, 0.3 * n, 0.6 * n, 0.6 * n), fill=RED)
    draw.rectangle((0.36 * n, 0.36 * n, 0.54 * n, 0.54 * n), fill=0)


def _plus(draw: ImageDraw.ImageDraw, n: int) -> None:
    draw.rectangle((0.3 * n, 0.4 * n, 0.6 * n, 0.5 * n), fill=RED)
    draw.rectangle((0.4 * n, 0.3 * n, 0.5 * n, 0.6 * n), fill=RED)


def _ell(draw: ImageDraw.ImageDraw, n: int) -> None:
    draw.rectangle((0.3 * n, 0.3 * n, 0.4 * n, 0.6 * n), fill=RED)
    draw.rectangle((0.3 * n, 0.5 * n, 0.6 * n, 0.6 * n), fill=RED)


def _diamond(draw: ImageDraw.ImageDraw, n: int) -> None:
    corners = [(0.45, 0.3), (0.6, 0.45), (0.45, 0.6), (0.3, 0.45)]
    draw.polygon([(x * n, y * n) for x, y in corners], fill=RED)


def _crescent(draw: ImageDraw.ImageDraw, n: int) -> None:
    draw.ellipse((0.3 * n, 0.3 * n, 0.6 * n, 0.6 * n), fill=RED)
    draw.ellipse((0.4 * n, 0.3 * n, 0.7 * n, 0.6 * n), fill=0)


def _bar(draw: ImageDraw.ImageDraw, n: int) -> None:
    draw.rectangle((0.2 * n, 0.4 * n, 0.6 * n, 0.48 * n), fill=RED)


def _huge_disc(draw: ImageDraw.ImageDraw, n: int) -> None:
    draw.ellipse((0.1 * n, 0.1 * n, 0.9 * n, 0.9 * n), fill=RED)


RED = PALETTE["red"]


@pytest.mark.parametrize("paint", [_ring, _frame, _plus, _ell, _diamond, _crescent, _bar, _huge_disc])
@pytest.mark.parametrize("size", SIZES)
def test_other_shapes_are_not_detected(paint, size: int):
    canvas = Image.new("RGB", (4 * size, 4 * size))
    paint(ImageDraw.Draw(canvas), 4 * size)
    image = np.asarray(canvas.resize((size, size), Image.Resampling.BOX))
    assert detect(image) == []


def test_blank_and_flat_images_fail():
    scenes = heldout_prompts(10, seed=3)
    flat = [(0, 0, 0), (255, 255, 255), (128, 128, 128), *PALETTE.values()]
    for colour in flat:
        image = np.full((128, 128, 3), colour, dtype=np.uint8)
        assert detect(image) == []
        assert not any(score(image, s.prompt).passed for s in scenes)


# ---------------------------------------------------------------------------------------------- wrong prompts


@functools.cache
def _groups(spec: PromptSpec) -> Counter:
    return Counter({(o.colour, o.kind): o.count for o in spec.objects})


INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def contradicts(truth: PromptSpec, wrong: PromptSpec) -> bool:
    """True when no scene of ``truth`` (exactly the prompt's objects, laid out as the sampler does) can
    satisfy ``wrong``: some named group has another count, or the same objects are claimed in another
    relation or region. Independent of the scorer's own check."""
    have = _groups(truth)
    if any(have[group] != count for group, count in _groups(wrong).items()):
        return True
    if truth.relation is not None and wrong.relation is not None:
        same_order = (truth.objects[0], truth.objects[1]) == (wrong.objects[0], wrong.objects[1])
        claimed = wrong.relation if same_order else INVERSE[wrong.relation]
        return claimed != truth.relation
    if truth.region is not None and wrong.region is not None:
        return truth.region != wrong.region
    return False


def near_misses(spec: PromptSpec) -> Iterator[PromptSpec]:
    """Prompts one edit away: another colour, kind, count, relation or region, or the objects swapped."""
    for i, obj in enumerate(spec.objects):
        for colour in COLOURS:
            yield _replace_object(spec, i, dataclasses.replace(obj, colour=colour))
        for kind in KINDS:
            yield _replace_object(spec, i, dataclasses.replace(obj, kind=kind))
    if spec.category == "counting":
        yield _replace_object(spec, 0, dataclasses.replace(spec.objects[0], count=5 - spec.objects[0].count))
    for relation in RELATIONS if spec.relation else ():
        yield dataclasses.replace(spec, relation=relation)
        yield dataclasses.replace(spec, relation=relation, objects=spec.objects[::-1])
    for region in REGIONS if spec.region else ():
        yield dataclasses.replace(spec, region=region)


def _replace_object(spec: PromptSpec, i: int, obj: ObjectSpec) -> PromptSpec:
    objects = list(spec.objects)
    objects[i] = obj
    return dataclasses.replace(spec, objects=tuple(objects))


def _valid(spec: PromptSpec) -> bool:
    return len(spec.objects) == 1 or spec.objects[0] != spec.objects[1]


def test_contradicts_helper_sanity():
    red_left = parse_prompt("a red circle left of a blue square")
    assert not contradicts(red_left, parse_prompt("a blue square right of a red circle"))
    assert not contradicts(red_left, parse_prompt("a blue square and a red circle"))
    assert not contradicts(red_left, parse_prompt("a red circle"))  # other objects are allowed
    assert contradicts(red_left, parse_prompt("a blue square left of a red circle"))
    assert contradicts(red_left, parse_prompt("a red circle above a blue square"))
    assert contradicts(red_left, parse_prompt("two red circles"))
    assert contradicts(parse_prompt("a red circle on the left"), parse_prompt("a red circle in the centre"))


def test_wrong_prompts_from_other_scenes_fail(ground_truth):
    size, scenes, images = ground_truth
    rng = np.random.default_rng(size)
    pool = [parse_prompt(s.prompt) for s in heldout_prompts(300, seed=10_000 + size)]
    pairs = []
    for scene, image in zip(scenes, images, strict=True):
        truth = parse_prompt(scene.prompt)
        candidates = [spec.prompt for spec in pool if contradicts(truth, spec)]
        pairs.append((image, candidates[int(rng.integers(len(candidates)))]))
    assert {parse_prompt(p).category for _, p in pairs} == set(CATEGORIES)
    report = evaluate([image for image, _ in pairs], [prompt for _, prompt in pairs])
    assert report.accuracy <= MAX_GARBAGE_PASS, [r for r in report.results if r.passed][:5]
    degraded = [degrade(image, rng) for image, _ in pairs[:100]]
    assert evaluate(degraded, [prompt for _, prompt in pairs[:100]]).accuracy <= MAX_GARBAGE_PASS


def test_near_miss_prompts_fail():
    """The hardest wrong prompts: one word changed (colour, shape, count, relation, region) or a swap."""
    scenes = heldout_prompts(60, seed=4)
    results = []
    for scene in scenes:
        truth = parse_prompt(scene.prompt)
        detections = detect(render(scene, 128))
        wrong = {w for w in near_misses(truth) if _valid(w) and contradicts(truth, w)}
        results += [check(w, detections)[0] for w in wrong]
    assert len(results) > 500
    assert np.mean(results) <= 0.02


# ---------------------------------------------------------------------------------------------- detection


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.sampled_from(CATEGORIES), st.sampled_from((64, 96, 128, 200, 256)))
def test_detect_recovers_the_drawn_shapes(seed: int, category: str, size: int):
    scene = sample_scene(np.random.default_rng(seed), category)
    detections = detect(render(scene, size))
    found = Counter((d.colour, d.kind) for d in detections)
    assert found == Counter((s.colour, s.kind) for s in scene.shapes)
    for shape in scene.shapes:
        near = [d for d in detections if (d.colour, d.kind) == (shape.colour, shape.kind)]
        error = min(max(abs(d.cx - shape.cx), abs(d.cy - shape.cy), abs(d.width - shape.size)) for d in near)
        assert error <= 0.03


def test_detect_ignores_specks_and_accepts_any_plain_background():
    scene = Scene((Shape("circle", "blue", 0.3, 0.6, 0.2),), "a blue circle", "single_object")
    image = render(scene, 128).copy()
    image[10:13, 100:103] = PALETTE["red"]  # a 3x3 speck, far below the minimum area
    assert [(d.colour, d.kind) for d in detect(image)] == [("blue", "circle")]
    grey = np.where(image.max(-1, keepdims=True) == 0, np.uint8(90), image)
    assert score(grey, "a blue circle on the left").passed


def test_relative_position_follows_geneval():
    def box(cx: float, cy: float, side: float = 0.2) -> Detection:
        return Detection("red", "square", cx, cy, side, side, 1.0)

    assert relative_position(box(0.2, 0.5), box(0.7, 0.5)) == {"left of"}
    assert relative_position(box(0.7, 0.5), box(0.2, 0.5)) == {"right of"}
    assert relative_position(box(0.5, 0.2), box(0.5, 0.8)) == {"above"}
    assert relative_position(box(0.2, 0.2), box(0.8, 0.8)) == {"left of", "above"}  # diagonal: both
    assert relative_position(box(0.2, 0.4), box(0.8, 0.5)) == {"left of"}
    assert relative_position(box(0.48, 0.5), box(0.52, 0.5)) == set()  # closer than the size margin


@pytest.mark.parametrize(
    ("cx", "cy", "regions"),
    [
        (0.2, 0.5, {"left"}),
        (0.36, 0.5, {"centre"}),
        (0.8, 0.5, {"right"}),
        (0.5, 0.3, {"top"}),
        (0.5, 0.7, {"bottom"}),
        (0.5, 0.5, {"centre"}),
        (0.2, 0.2, {"left", "top"}),
        (0.64, 0.6, {"centre"}),
    ],
)
def test_absolute_regions_are_thirds(cx: float, cy: float, regions: set[str]):
    detection = Detection("red", "square", cx, cy, 0.2, 0.2, 1.0)
    assert {r for r in REGIONS if in_region(detection, r)} == regions


def test_checks_are_exact_counts_and_ignore_unnamed_objects():
    def found(*groups: tuple[str, str, float]) -> list[Detection]:
        return [Detection(c, k, x, 0.5, 0.2, 0.2, 1.0) for c, k, x in groups]

    two_red = found(("red", "circle", 0.2), ("red", "circle", 0.6))
    assert check(parse_prompt("two red circles"), two_red)[0]
    assert not check(parse_prompt("three red circles"), two_red)[0]
    assert not check(parse_prompt("a red circle"), two_red)[0]
    extra = [*two_red, *found(("blue", "square", 0.85))]
    assert check(parse_prompt("two red circles"), extra)[0]
    passed, reason = check(parse_prompt("a green triangle"), extra)
    assert not passed and "expected 1x green triangle, found 0" in reason and "2x red circle" in reason


# ---------------------------------------------------------------------------------------------- report, API


def test_report_accuracies_and_dict():
    results = (
        PromptResult("a red circle", "single_object", True, "ok", True),
        PromptResult("a blue circle", "single_object", False, "no", False),
        PromptResult("two red circles", "counting", True, "ok", False),
    )
    report = Report(results)
    assert report.accuracy == pytest.approx(2 / 3) and report.strict_accuracy == pytest.approx(1 / 3)
    assert report.per_category == {"single_object": 0.5, "counting": 1.0}
    assert report.strict_per_category == {"single_object": 0.5, "counting": 0.0}
    assert report.mean_category_accuracy == pytest.approx(0.75)
    assert report.strict_mean_category_accuracy == pytest.approx(0.25)
    d = report.to_dict()
    assert d["n"] == 3 and d["per_category"]["single_object"] == {"n": 2, "accuracy": 0.5, "strict_accuracy": 0.5}
    assert d["strict_accuracy"] == pytest.approx(1 / 3) and d["strict_mean_category_accuracy"] == pytest.approx(0.25)
    assert d["results"][1] == dataclasses.asdict(results[1])
    assert set(d["results"][1]) == {"prompt", "category", "passed", "reason", "strict"}
    assert "results" not in report.to_dict(include_results=False)
    assert Report(()).accuracy == 0.0


def test_api_errors():
    image = render(heldout_prompts(1, 0)[0], 64)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        evaluate([image, image], ["a red circle"])
    with pytest.raises(ValueError, match="unknown colour"):
        score(image, "a pink circle")
    with pytest.raises(ValueError, match="uint8"):
        detect(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detect(image[..., 0])
