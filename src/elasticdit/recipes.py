"""Export recipes: TOML data that selects registered lowering and quantization steps.

A recipe is found by name among the packaged ones (each target's `targets/<target>/recipes/*.toml`), or read
from a path. Every key is checked against the schema below; an unknown key or a value outside its choices is a
`RecipeError` naming it. What depends on the target (its name, the quantization schemes it offers, its defaults)
comes from the target objects the caller passes in (`elasticdit.targets.TARGETS`), so this module knows no
target by name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from .errors import LoweringUnavailableError, RecipeError
from .ssba.lowering import lowering_custom_ops, lowering_names


class RecipeTarget(Protocol):
    """What recipe parsing needs to know of a target (`elasticdit.targets.base.Target` has it)."""

    name: str
    default_recipe: str
    schemes: tuple[str, ...]  # quantization schemes it offers, "none" first
    recipe_defaults: Mapping[str, Any]  # defaults that differ by target, e.g. {"precision": "fp16"}
    custom_ops: tuple[str, ...]  # custom operators its runtime can provide (lowerings calling others are refused)


# section -> key -> (type, allowed values or None)
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], tuple | None]]] = {
    "": {
        "name": (str, None),
        "target": (str, None),  # checked against the targets given to parse_recipe
        "description": (str, None),
        "operating_points": (list, None),
    },
    "lowering": {"attention": (str, None)},
    "quantization": {
        "scheme": (str, None),
        "group_size": (int, None),
        "nbits": (int, (4, 6, 8)),
    },
    "coreml": {
        "precision": (str, ("fp16", "fp32")),
        "minimum_deployment_target": (str, ("iOS18",)),
    },
    "verify": {
        "max_rel_error": ((int, float), None),
        "quantized_max_rel_error": ((int, float), None),
        "min_snr_db": ((int, float), None),
        "float16_min_snr_db": ((int, float), None),
    },
}


RECIPE_DEFAULTS: dict[str, Any] = {"precision": "fp32", "minimum_deployment_target": "iOS18"}


@dataclass(frozen=True)
class Recipe:
    name: str
    target: str
    description: str = ""
    attention: str = "masked"
    quantization: str = "none"
    group_size: int = 32
    nbits: int = 8
    precision: str = "fp32"
    minimum_deployment_target: str = "iOS18"
    max_rel_error: float | None = None
    quantized_max_rel_error: float | None = None
    min_snr_db: float | None = None
    float16_min_snr_db: float | None = None
    operating_points: tuple[str, ...] = ()
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    def to_manifest(self) -> dict[str, Any]:
        return {"name": self.name, **self.raw}


def packaged_recipes() -> dict[str, Path]:
    """Every recipe shipped with a target: {name: path}, by name."""
    root = Path(str(resources.files("elasticdit") / "targets"))
    return {p.stem: p for p in sorted(root.glob("*/recipes/*.toml"), key=lambda p: p.stem)}


def load_recipe(name_or_path: str | None, target: RecipeTarget, targets: Mapping[str, RecipeTarget]) -> Recipe:
    """The recipe named (or at the path given) for `target`; the target's default when None."""
    name_or_path = name_or_path or target.default_recipe
    known = packaged_recipes()
    if name_or_path in known:
        path = known[name_or_path]
    elif name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
    else:
        options = ", ".join(n for n in known if n.startswith(target.name)) or "none"
        raise RecipeError(f"unknown recipe '{name_or_path}'; {target.name} recipes: {options}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path} is not valid TOML: {exc}") from None
    recipe = parse_recipe(raw, str(path), targets)
    if recipe.target != target.name:
        raise RecipeError(f"recipe '{recipe.name}' is for target {recipe.target}, not {target.name}")
    return recipe


def _check(section: str, key: str, value: Any) -> None:
    where = f"{section}.{key}" if section else key
    if key not in SCHEMA[section]:
        raise RecipeError(f"unknown recipe key '{where}'; known: {', '.join(SCHEMA[section])}")
    kind, choices = SCHEMA[section][key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise RecipeError(f"recipe key '{where}' has a value of the wrong type: {value!r}")
    if choices is not None and value not in choices:
        raise RecipeError(f"recipe key '{where}' = {value!r} is not one of {', '.join(map(str, choices))}")


def parse_recipe(raw: dict[str, Any], source: str, targets: Mapping[str, RecipeTarget]) -> Recipe:
    """Check every key of a recipe's tables and fill in the defaults (the target's where it has its own)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in SCHEMA or not key:
                raise RecipeError(f"unknown recipe section '[{key}]'; known: {', '.join(s for s in SCHEMA if s)}")
            for sub, sub_value in value.items():
                _check(key, sub, sub_value)
                flat[sub] = sub_value
        else:
            _check("", key, value)
            flat[key] = value
    for required in ("name", "target"):
        if required not in flat:
            raise RecipeError(f"recipe {source} lacks '{required}'")
    target = flat["target"]
    if target not in targets:
        raise RecipeError(f"recipe key 'target' = {target!r} is not one of {', '.join(targets)}")
    offered = targets[target].schemes
    defaults = {**RECIPE_DEFAULTS, **targets[target].recipe_defaults}
    attention = flat.get("attention", "masked")
    if attention not in lowering_names():
        raise RecipeError(
            f"recipe key 'lowering.attention' = {attention!r} is not one of {', '.join(lowering_names())}"
        )
    lacking = [op for op in lowering_custom_ops(attention) if op not in targets[target].custom_ops]
    if lacking:
        takers = ", ".join(n for n, t in targets.items() if set(lowering_custom_ops(attention)) <= set(t.custom_ops))
        stock = ", ".join(n for n in lowering_names() if not lowering_custom_ops(n))
        raise LoweringUnavailableError(
            f"recipe key 'lowering.attention' = {attention!r} calls the custom operator {lacking[0]}, which the "
            f"{target} runtime cannot provide (only {takers or 'no target'}); choose one of {stock}"
        )
    scheme = flat.get("scheme", "none")
    if scheme not in offered:
        raise RecipeError(
            f"recipe key 'quantization.scheme' = {scheme!r} is not offered for {target}; "
            f"choose one of {', '.join(offered)}"
        )
    points = flat.get("operating_points", [])
    if not all(isinstance(p, str) for p in points):
        raise RecipeError("recipe key 'operating_points' must be a list of names")
    return Recipe(
        name=flat["name"],
        target=target,
        description=flat.get("description", ""),
        attention=attention,
        quantization=scheme,
        group_size=flat.get("group_size", 32),
        nbits=flat.get("nbits", 8),
        precision=flat.get("precision", defaults["precision"]),
        minimum_deployment_target=flat.get("minimum_deployment_target", defaults["minimum_deployment_target"]),
        max_rel_error=flat.get("max_rel_error"),
        quantized_max_rel_error=flat.get("quantized_max_rel_error"),
        min_snr_db=flat.get("min_snr_db"),
        float16_min_snr_db=flat.get("float16_min_snr_db"),
        operating_points=tuple(points),
        source=source,
        raw=raw,
    )
