"""The atomic bundle writer, the manifest reader and recipe parsing (shared by every target)."""

import json

import pytest

from elasticdit.bundle import BundleWriter
from elasticdit.bundle.files import check_files
from elasticdit.bundle.reader import read_manifest
from elasticdit.errors import BundleError, RecipeError
from elasticdit.recipes import parse_recipe
from elasticdit.targets import TARGETS, target_recipe

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
    r = target_recipe(None, "android")
    assert r.name == "android-fp32" and r.quantization == "none" and r.max_rel_error == 1e-4
    base = {"name": "x", "target": "android"}
    with pytest.raises(RecipeError, match="unknown recipe key 'quantization.bits'"):
        parse_recipe({**base, "quantization": {"bits": 4}}, "<recipe>", TARGETS)
    with pytest.raises(RecipeError, match="unknown recipe section"):
        parse_recipe({**base, "turbo": {"on": True}}, "<recipe>", TARGETS)
    with pytest.raises(RecipeError, match="'quantization.scheme' = 'int8-weight-only' is not offered for android"):
        parse_recipe({**base, "quantization": {"scheme": "int8-weight-only"}}, "<recipe>", TARGETS)
    with pytest.raises(RecipeError, match="'lowering.attention' = 'magic'"):
        parse_recipe({**base, "lowering": {"attention": "magic"}}, "<recipe>", TARGETS)
    with pytest.raises(RecipeError, match="wrong type"):
        parse_recipe({**base, "quantization": {"group_size": "32"}}, "<recipe>", TARGETS)
    with pytest.raises(RecipeError, match="unknown recipe 'android-fp64'"):
        target_recipe("android-fp64", "android")
    with pytest.raises(RecipeError, match="'target' = 'web' is not one of android, ios, onnx"):
        parse_recipe({"name": "x", "target": "web"}, "<recipe>", TARGETS)
    # what differs by target comes from the target: iOS computes in fp16 unless a recipe says otherwise
    assert parse_recipe({"name": "x", "target": "ios"}, "<recipe>", TARGETS).precision == "fp16"
    assert parse_recipe(base, "<recipe>", TARGETS).precision == "fp32"
    with pytest.raises(RecipeError, match="is for target android, not ios"):
        target_recipe("android-fp32", "ios")


# --- --force never deletes what is not ours ----------------------------------------------------------------


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    dest = tmp_path / "thesis"
    dest.mkdir()
    (dest / "thesis.txt").write_text("four years")
    with pytest.raises(BundleError, match=r"is not an elasticdit bundle \(no manifest.json of ours\)"):
        write_bundle(dest, force=True)
    assert tree(dest) == {"thesis.txt": b"four years"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_force_refuses_a_bundle_holding_foreign_files_and_names_them(tmp_path):
    dest = tmp_path / "b"
    write_bundle(dest)
    (dest / "notes.txt").write_text("mine")
    (dest / "pkg.mlpackage" / "Data" / "extra.bin").write_bytes(b"x")
    (dest / "empty").mkdir()
    before = tree(dest)
    listing = r"holds files its manifest does not list \(empty/, notes.txt, pkg.mlpackage/Data/extra.bin\)"
    with pytest.raises(BundleError, match=listing):
        write_bundle(dest, b"new", force=True)
    assert tree(dest) == before and (dest / "empty").is_dir()


def test_force_refuses_the_working_folder_of_a_project(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print()")
    monkeypatch.chdir(project)
    from typer.testing import CliRunner

    from elasticdit.cli import app

    result = CliRunner().invoke(app, ["export", "--target", "android", "-o", ".", "--force", "--ops", "r4_d3"])
    assert result.exit_code == 1 and "is not an elasticdit bundle" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert tree(project) == {"src/main.py": b"print()"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_force_replaces_an_empty_folder_and_refuses_a_link(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    write_bundle(empty, force=True)
    assert (empty / "manifest.json").is_file()
    link = tmp_path / "link"
    link.symlink_to(empty, target_is_directory=True)
    with pytest.raises(BundleError, match="is a symbolic link"):
        write_bundle(link, b"new", force=True)
    assert (empty / "model.pte").read_bytes() == b"abc" and link.is_symlink()


def test_replacement_swaps_atomically_or_falls_back(tmp_path, monkeypatch):
    from elasticdit.bundle import writer as bundle

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    assert bundle._exchange(a, b)  # Linux renameat2(RENAME_EXCHANGE) / macOS renamex_np(RENAME_SWAP)
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
    dest = tmp_path / "dest"
    write_bundle(dest)
    monkeypatch.setattr(bundle, "_exchange", lambda a, b: False)  # a file system without an exchange
    write_bundle(dest, b"new", force=True)
    assert (dest / "model.pte").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "dest"]


def test_disk_full_midway_is_one_line_and_leaves_the_destination(tmp_path):
    import errno

    dest = tmp_path / "b"
    write_bundle(dest)
    before = tree(dest)
    message = r"writing the bundle .* failed: No space left on device \(.*model.pte\)"
    with pytest.raises(BundleError, match=message), BundleWriter(dest, force=True) as w:
        w.path("model.pte").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(w.path("model.pte")))
    assert tree(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_export_on_a_full_disk_is_a_one_line_error(bare_ckpt, tmp_path, monkeypatch):
    import errno
    import pathlib

    from typer.testing import CliRunner

    from elasticdit.cli import app

    dest = tmp_path / "bundle"
    real_write_bytes, real_open = pathlib.Path.write_bytes, pathlib.Path.open

    def no_space(path, data, write):
        write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    class FullDisk:  # a file in the bundle being written: half of the first write lands, then the disk is full
        def __init__(self, path, f):
            self.path, self.f = path, f

        def write(self, data):
            no_space(self.path, data, self.f.write)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_disk_bytes(self, data):
        if ".partial-" in str(self):
            no_space(self, data, lambda d: real_write_bytes(self, d))
        return real_write_bytes(self, data)

    def full_disk_open(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return FullDisk(self, f) if ".partial-" in str(self) and "w" in mode else f

    # both ways the writers put bytes on disk (the .pte is streamed through an open file)
    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk_bytes)
    monkeypatch.setattr(pathlib.Path, "open", full_disk_open)
    args = ["export", str(bare_ckpt), "--target", "android", "--ops", "r2_d2", "-o", str(dest)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: writing the bundle") and "No space left on device" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written, no temporary folder


def test_oserror_anywhere_in_a_command_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from elasticdit.cli import app

    unreadable = tmp_path / "ckpt.safetensors"
    unreadable.mkdir()  # reading a folder as a file: IsADirectoryError
    result = CliRunner().invoke(app, ["inspect", str(unreadable)])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.output


# --- every path a manifest names stays inside its bundle ---------------------------------------------------


def point(file="model.pte"):
    return {"name": "r1_d1", "method": "denoise_r1_d1", "file": file, "inputs": [], "outputs": []}


def rewrite(dest, **changes):
    doc = json.loads((dest / "manifest.json").read_text())
    doc.update(changes)
    (dest / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "path, message",
    [
        ("../../etc/hostname", "is not a normalized path inside the bundle"),
        ("/etc/hostname", "is an absolute path"),
        ("a/../model.pte", "is not a normalized path inside the bundle"),
        ("./model.pte", "is not a normalized path inside the bundle"),
        ("model.pte/", "is not a normalized path inside the bundle"),
        ("", "is not a file name"),
    ],
)
def test_listed_paths_must_stay_inside(tmp_path, path, message):
    from elasticdit.errors import BundlePathError

    dest = tmp_path / "b"
    manifest = write_bundle(dest)
    rewrite(dest, files=[*manifest["files"], {"path": path, "sha256": "0" * 64, "bytes": 1}])
    with pytest.raises(BundlePathError, match=message):
        read_manifest(dest)


def test_method_files_must_be_hashed_and_links_never_followed(tmp_path):
    from elasticdit.errors import BundlePathError

    dest = tmp_path / "b"
    manifest = write_bundle(dest)
    rewrite(dest, operating_points=[point("other.pte")])
    with pytest.raises(BundlePathError, match="runs 'other.pte', which the manifest's hashed file list does not hold"):
        read_manifest(dest)
    rewrite(dest, operating_points=[point("../model.pte")])
    with pytest.raises(BundlePathError, match="not a normalized path"):
        read_manifest(dest)
    rewrite(dest, operating_points=[point("pkg.mlpackage")])  # a package folder of hashed files is fine
    assert read_manifest(dest)["operating_points"][0]["file"] == "pkg.mlpackage"
    outside = tmp_path / "secret"
    outside.write_text("s")
    (dest / "model.pte").unlink()
    (dest / "model.pte").symlink_to(outside)
    rewrite(dest, operating_points=[point()])
    with pytest.raises(BundlePathError, match="leads outside the bundle"):
        read_manifest(dest)
    (dest / "model.pte").unlink()
    (dest / "model.pte").symlink_to(dest / "pkg.mlpackage" / "Data" / "weight.bin")  # inside, but a link
    rows = {r["path"]: r["problem"] for r in check_files(dest, read_manifest(dest))}
    assert rows["model.pte"] == "a symbolic link"
    assert manifest["files"][0]["path"] == "model.pte"


@pytest.mark.parametrize("target", ["ios", "onnx"])
def test_kernel_lowering_is_refused_for_a_runtime_without_the_op(tiny_ckpt, tmp_path, target):
    """`lowering.attention = "kernel"` calls elasticdit::ssba_attention, which only an ExecuTorch runtime built with
    elasticdit's kernels has: an iOS or ONNX recipe asking for it is a named error when the recipe is read, before
    the checkpoint is opened or anything is written (a checkpoint path that does not exist shows the order)."""
    from typer.testing import CliRunner

    from elasticdit.cli import app
    from elasticdit.errors import LoweringUnavailableError

    recipe = {"name": "x", "target": target, "lowering": {"attention": "kernel"}}
    with pytest.raises(LoweringUnavailableError, match=f"elasticdit::ssba_attention, which the {target} runtime"):
        parse_recipe(recipe, "<recipe>", TARGETS)
    assert parse_recipe({**recipe, "target": "android"}, "<recipe>", TARGETS).attention == "kernel"
    assert parse_recipe({**recipe, "lowering": {"attention": "tiles"}}, "<recipe>", TARGETS).attention == "tiles"
    path = tmp_path / "kernel.toml"
    path.write_text(f'name = "{target}-kernel"\ntarget = "{target}"\n[lowering]\nattention = "kernel"\n')
    out = tmp_path / "bundle"
    for ckpt in (tmp_path / "missing.safetensors", tiny_ckpt):
        args = ["export", str(ckpt), "--target", target, "--recipe", str(path), "-o", str(out)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and not out.exists()
        line = result.stderr.strip()
        assert line.startswith("error: recipe key 'lowering.attention' = 'kernel' calls the custom operator")
        assert "(only android); choose one of dense, masked, slices, tiles" in line and "\n" not in line
