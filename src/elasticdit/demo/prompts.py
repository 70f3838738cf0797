"""The demo's prompt grammar (GenEval-style), its parser, and the split into training and held-out prompts.

Every prompt has one of five categories:

- ``single_object``:     "a red circle"
- ``counting``:          "two blue squares", "three green triangles"
- ``two_objects``:       "a red circle and a blue square"
- ``position``:          "a red circle left of a green triangle" (also "right of", "above", "below")
- ``absolute_position``: "a yellow square on the left" ("on the right", "at the top", "at the bottom",
  "in the centre")

7 colours x 3 shapes: 21 single objects, 42 counts, 420 two-object and 1,680 relation prompts, 105 absolute positions.

Held-out prompts (``is_heldout``): a prompt is held out when the sha256 of its canonical form (``canonical_prompt``:
the two objects of an "and" prompt in alphabetical order, a relation stated as "left of" or "above") is 0 modulo
HELDOUT_MODULUS. So about one prompt meaning in five is held out in every category, with every phrasing of it ("a red
circle left of a blue square" and "a blue square right of a red circle" together). ``shapes.training_scenes`` never
draws a held-out prompt and ``shapes.heldout_prompts`` draws nothing else: an evaluation prompt string never occurs in
training (docs/demo.md, "Held-out prompts").
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from dataclasses import dataclass

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
HELDOUT_MODULUS = 5  # one prompt meaning in five is held out (sha256 of its canonical form % 5 == 0)
SPLITS = ("train", "heldout")
_MIRRORED = {"right of": "left of", "below": "above"}  # relations restated with the objects swapped


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


def all_prompts(category: str | None = None) -> list[str]:
    """Every prompt of the grammar (of one category, or all in CATEGORIES order), each once."""
    categories = CATEGORIES if category is None else (category,)
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown category {unknown[0]!r}; expected one of {CATEGORIES}")
    return [spec.prompt for c in categories for spec in _all_specs(c)]


def _all_specs(category: str) -> list[PromptSpec]:
    groups = [ObjectSpec(colour, kind) for colour in COLOURS for kind in KINDS]
    if category == "single_object":
        return [PromptSpec(category, (g,)) for g in groups]
    if category == "counting":
        return [PromptSpec(category, (ObjectSpec(g.colour, g.kind, n),)) for g in groups for n in (2, 3)]
    if category == "absolute_position":
        return [PromptSpec(category, (g,), region=r) for g in groups for r in REGIONS]
    pairs = list(itertools.permutations(groups, 2))
    if category == "two_objects":
        return [PromptSpec(category, pair) for pair in pairs]
    return [PromptSpec(category, pair, relation=r) for pair in pairs for r in RELATIONS]


def canonical_prompt(prompt: str | PromptSpec) -> str:
    """The prompt of the same meaning in one fixed phrasing: an "and" prompt's two objects in alphabetical order
    of colour, then shape; "right of" and "below" restated as "left of" and "above" with the objects swapped.
    Anything ``parse_prompt`` accepts (any case, "center", "one") maps to the grammar's own spelling."""
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    if spec.category == "two_objects":
        spec = PromptSpec(spec.category, tuple(sorted(spec.objects, key=lambda o: (o.colour, o.kind))))
    elif spec.relation in _MIRRORED:
        spec = PromptSpec(spec.category, spec.objects[::-1], relation=_MIRRORED[spec.relation])
    return spec.prompt


def is_heldout(prompt: str | PromptSpec) -> bool:
    """Whether the prompt belongs to the held-out split: sha256(canonical_prompt) % HELDOUT_MODULUS == 0."""
    return _canonical_is_heldout(canonical_prompt(prompt))


@functools.lru_cache(maxsize=4096)
def _canonical_is_heldout(canonical: str) -> bool:
    return int(hashlib.sha256(canonical.encode()).hexdigest(), 16) % HELDOUT_MODULUS == 0


def split_of(prompt: str | PromptSpec) -> str:
    """``"heldout"`` or ``"train"``."""
    return "heldout" if is_heldout(prompt) else "train"
