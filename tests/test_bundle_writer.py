"""The atomic bundle writer, the manifest reader and recipe parsing (shared by every target)."""

import json

import pytest

from elasticdit.bundle import BundleWriter
from elasticdit.errors import BundleError, RecipeError
from elasticdit.manifest import check_files, read_manifest
from elasticdit.recipes import load_recipe, parse_recipe

MANIFEST = {
    "format": "elasticdit-bundle",
    "version": 1,
    "target": "android",
    "checkpoint_sha256": "x",
    "recipe": {},
    "resolution": [8, 8],
    "scheduler": {},
    "operating_points": [],
}


def write_bundle(dest, payload=b"abc", force=False):
    with BundleWriter(dest, force=force) as w:
        w.path("model.pte").write_bytes(payload)
        (w.path("pkg.mlpackage") / "Data").mkdir(parents=True)
        (w.path("pkg.mlpackage") / "Data" / "weight.bin").write_bytes(b"w")
        return w.finish(dict(MANIFEST))


def test_writes_hashes_and_refuses_existing(tmp_path):
    dest = tmp_path / "b"
    manifest = write_bundle(dest)
    assert [f["path"] for f in manifest["files"]] == ["model.pte", "pkg.mlpackage/Data/weight.bin"]
    assert json.loads((dest / "manifest.json").read_text()) == manifest
    assert all(r["ok"] for r in check_files(dest, read_manifest(dest)))
    with pytest.raises(BundleError, match="--force"):
        write_bundle(dest, b"new")
    assert (dest / "model.pte").read_bytes() == b"abc"
    write_bundle(dest, b"new", force=True)
    assert (dest / "model.pte").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary folders left


def test_failure_midway_leaves_destination_untouched(tmp_path):
    dest = tmp_path / "b"
    write_bundle(dest)
    before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    with pytest.raises(RuntimeError), BundleWriter(dest, force=True) as w:
        w.path("model.pte").write_bytes(b"half")
        raise RuntimeError("lowering failed")
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_tampering_is_detected(tmp_path):
    dest = tmp_path / "b"
    write_bundle(dest)
    (dest / "model.pte").write_bytes(b"abd")
    (dest / "stray.txt").write_text("?")
    rows = {r["path"]: r for r in check_files(dest, read_manifest(dest))}
    assert "tampered" in rows["model.pte"]["problem"]
    assert rows["stray.txt"]["problem"] == "not listed in the manifest"
    (dest / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(dest)


def test_unwritable_destination(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BundleError, match="cannot write a bundle"):
        write_bundle(blocker / "b")


def test_recipes_parse_and_name_bad_keys():
    r = load_recipe(None, "android")
    assert r.name == "android-fp32" and r.quantization == "none" and r.max_rel_error == 1e-4
    base = {"name": "x", "target": "android"}
    with pytest.raises(RecipeError, match="unknown recipe key 'quantization.bits'"):
        parse_recipe({**base, "quantization": {"bits": 4}})
    with pytest.raises(RecipeError, match="unknown recipe section"):
        parse_recipe({**base, "turbo": {"on": True}})
    with pytest.raises(RecipeError, match="'quantization.scheme' = 'int8-weight-only' is not offered for android"):
        parse_recipe({**base, "quantization": {"scheme": "int8-weight-only"}})
    with pytest.raises(RecipeError, match="'lowering.attention' = 'magic'"):
        parse_recipe({**base, "lowering": {"attention": "magic"}})
    with pytest.raises(RecipeError, match="wrong type"):
        parse_recipe({**base, "quantization": {"group_size": "32"}})
    with pytest.raises(RecipeError, match="unknown recipe 'android-fp64'"):
        load_recipe("android-fp64", "android")
    with pytest.raises(RecipeError, match="is for target android, not ios"):
        load_recipe("android-fp32", "ios")
