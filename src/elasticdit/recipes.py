"""Export recipes: TOML data that selects registered lowering and quantization steps.

A recipe is found by name among the packaged `recipes/*.toml`, or read from a path. Every key is checked
against the schema below; an unknown key or a value outside its choices is a `RecipeError` naming it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import RecipeError
from .ssba.lowering import lowering_names

DEFAULT_RECIPES = {"android": "android-fp32", "ios": "ios-fp16", "onnx": "onnx-fp32"}
QUANT_SCHEMES = {
    "android": ("none", "pt2e-int8", "8da4w"),
    "ios": ("none", "linear-int8", "palettize"),
    "onnx": ("none", "dynamic-int8"),
}

# section -> key -> (type, allowed values or None)
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], tuple | None]]] = {
    "": {
        "name": (str, None),
        "target": (str, tuple(DEFAULT_RECIPES)),
        "description": (str, None),
        "operating_points": (list, None),
    },
    "lowering": {"attention": (str, None)},
    "quantization": {
        "scheme": (str, None),
        "group_size": (int, None),
        "nbits": (int, (4, 6, 8)),
        "calibration_samples": (int, None),
    },
    "coreml": {
        "precision": (str, ("fp16", "fp32")),
        "minimum_deployment_target": (str, ("iOS18",)),
    },
    "verify": {"max_rel_error": ((int, float), None), "min_snr_db": ((int, float), None)},
}


@dataclass(frozen=True)
class Recipe:
    name: str
    target: str
    description: str = ""
    attention: str = "masked"
    quantization: str = "none"
    group_size: int = 32
    nbits: int = 8
    calibration_samples: int = 8
    precision: str = "fp32"
    minimum_deployment_target: str = "iOS18"
    max_rel_error: float | None = None
    min_snr_db: float | None = None
    operating_points: tuple[str, ...] = ()
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    def to_manifest(self) -> dict[str, Any]:
        return {"name": self.name, **self.raw}


def packaged_recipes() -> dict[str, Path]:
    root = Path(str(resources.files("elasticdit") / "recipes"))
    return {p.stem: p for p in sorted(root.glob("*.toml"))}


def load_recipe(name_or_path: str | None, target: str) -> Recipe:
    """The recipe named (or at the path given); the target's default when None."""
    name_or_path = name_or_path or DEFAULT_RECIPES[target]
    known = packaged_recipes()
    if name_or_path in known:
        path = known[name_or_path]
    elif name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
    else:
        options = ", ".join(n for n in known if n.startswith(target)) or "none"
        raise RecipeError(f"unknown recipe '{name_or_path}'; {target} recipes: {options}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path} is not valid TOML: {exc}") from None
    recipe = parse_recipe(raw, str(path))
    if recipe.target != target:
        raise RecipeError(f"recipe '{recipe.name}' is for target {recipe.target}, not {target}")
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


def parse_recipe(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
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
    attention = flat.get("attention", "masked")
    if attention not in lowering_names():
        raise RecipeError(
            f"recipe key 'lowering.attention' = {attention!r} is not one of {', '.join(lowering_names())}"
        )
    scheme = flat.get("scheme", "none")
    if scheme not in QUANT_SCHEMES[target]:
        raise RecipeError(
            f"recipe key 'quantization.scheme' = {scheme!r} is not offered for {target}; "
            f"choose one of {', '.join(QUANT_SCHEMES[target])}"
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
        calibration_samples=flat.get("calibration_samples", 8),
        precision=flat.get("precision", "fp16" if target == "ios" else "fp32"),
        minimum_deployment_target=flat.get("minimum_deployment_target", "iOS18"),
        max_rel_error=flat.get("max_rel_error"),
        min_snr_db=flat.get("min_snr_db"),
        operating_points=tuple(points),
        source=source,
        raw=raw,
    )
