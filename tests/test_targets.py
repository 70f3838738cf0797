"""The target registry and what every target declares: its recipes, schemes, default recipe, transports; the one
quantization rule; the typed manifest reading back exactly what it writes."""

from __future__ import annotations

import json

import pytest

from elasticdit.bundle.manifest import Manifest, check_structure
from elasticdit.errors import BundleError, ExportError
from elasticdit.quant import SCHEMES, applies
from elasticdit.recipes import packaged_recipes
from elasticdit.specs import MethodKind
from elasticdit.targets import TARGETS, get_target, target_recipe


def test_registry_lists_every_target_once():
    assert list(TARGETS) == ["android", "ios", "onnx"]
    for name, target in TARGETS.items():
        assert target.name == name and get_target(name) is target
    with pytest.raises(ExportError, match="unknown target 'web'; choose android, ios or onnx"):
        get_target("web")


@pytest.mark.parametrize("name", list(TARGETS))
def test_each_target_ships_its_recipes_and_offers_known_schemes(name):
    target = TARGETS[name]
    own = {n: p for n, p in packaged_recipes().items() if p.parent.parent.name == name}
    assert target.default_recipe in own and all(n.startswith(f"{name}-") for n in own)
    assert target.schemes[0] == "none" and set(target.schemes[1:]) <= set(SCHEMES)
    for recipe_name in own:
        recipe = target_recipe(recipe_name, name)  # parses and checks every key
        assert recipe.target == name and recipe.quantization in target.schemes
    assert target_recipe(None, name).name == target.default_recipe
    assert target.transports and set(target.transports) <= {"host", "adb", "ssh", "ios"}


def test_every_scheme_is_offered_by_exactly_one_target():
    offered = [s for t in TARGETS.values() for s in t.schemes[1:]]
    assert sorted(offered) == sorted(SCHEMES)


def test_only_denoise_methods_are_quantized():
    assert applies("pt2e-int8", MethodKind.DENOISE) and applies("palettize", "denoise")
    assert not applies("pt2e-int8", MethodKind.DECODE) and not applies("dynamic-int8", MethodKind.ENCODE_TEXT)
    assert not applies("none", MethodKind.DENOISE)


def test_manifest_reads_back_what_it_writes(android_bundle):
    out, _ = android_bundle
    doc = json.loads((out / "manifest.json").read_text())
    manifest = Manifest.from_dict(check_structure(doc, "m", TARGETS), "m", TARGETS)
    assert manifest.to_dict() == doc and list(manifest.to_dict()) == list(doc)  # same keys, same order
    assert [e.kind for e in manifest.methods()] == ["denoise", "denoise", "decode", "encode_text"]
    assert manifest.point("r2_d2").point.blocks == (0, 3) and manifest.recipe.attention == "tiles"
    broken = dict(doc, decoder={"method": "decode"})
    with pytest.raises(BundleError, match="a method entry is malformed"):
        Manifest.from_dict(broken, "m", TARGETS)
    with pytest.raises(BundleError, match="names an unknown target 'web'"):
        check_structure(dict(doc, target="web"), "m", TARGETS)
