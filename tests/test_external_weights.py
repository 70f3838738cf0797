"""`export --weights external`: an Android bundle as model.pte + model.ptd (ExecuTorch program-data separation).

The external form must compute exactly what the inline form computes, store each weight once, re-export to the
same bytes, and refuse a missing or altered .ptd with a named error; the inline form is left as it was."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import OPS, export_cli
from typer.testing import CliRunner

from elasticdit.bundle.files import check_paths
from elasticdit.bundle.reader import read_bundle
from elasticdit.cli import app
from elasticdit.errors import BundleError, BundlePathError, ExternalWeightsError
from elasticdit.specs import example_inputs
from elasticdit.targets.android.runtime import ExecuTorchRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def external_bundle(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("external") / "bundle"
    return out, export_cli(tiny_ckpt, "android", out, "--ops", OPS, "--weights", "external")


def inputs_for(entry, seed: int) -> list[torch.Tensor]:
    return list(example_inputs(entry.inputs, seed))


def test_external_form_is_pte_plus_ptd_and_the_manifest_names_it(external_bundle):
    out, _ = external_bundle
    doc = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in doc["files"]] == ["model.ptd", "model.pte"]
    for entry in [*doc["operating_points"], doc["decoder"], doc["text_encoder"]]:
        assert entry["file"] == "model.pte" and entry["data_file"] == "model.ptd"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.ptd", "model.pte"]


def test_weights_are_stored_once_across_methods(external_bundle, android_bundle, tiny_ckpt):
    from elasticdit.checkpoint import load_checkpoint

    out, _ = external_bundle
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    weights = sum(t.numel() * 4 for t in load_checkpoint(tiny_ckpt).tensors.values())
    # every method shares the transformer: stored per method the .ptd would hold about 2x the transformer
    assert sizes["model.ptd"] < 1.1 * weights, (sizes, weights)
    inline = (android_bundle[0] / "model.pte").stat().st_size
    assert sizes["model.pte"] < 0.4 * inline  # the program without its weights
    assert abs(sizes["model.pte"] + sizes["model.ptd"] - inline) < 0.1 * inline


def test_outputs_equal_the_inline_form_exactly(external_bundle, android_bundle):
    ext, inl = read_bundle(external_bundle[0]), read_bundle(android_bundle[0])
    ext_run = ExecuTorchRunner(ext.path, None, ext.manifest)
    inl_run = ExecuTorchRunner(inl.path, None, inl.manifest)
    for entry in inl.manifest.methods():
        xs = inputs_for(entry, seed=3)
        got, want = ext_run.run(ext.manifest.method(entry.method), xs), inl_run.run(entry, xs)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w), entry.method


def test_verify_passes_on_the_external_form(external_bundle, tiny_ckpt):
    result = runner.invoke(app, ["verify", str(external_bundle[0]), "--checkpoint", str(tiny_ckpt), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    assert all(m["passed"] for m in json.loads(result.stdout)["methods"])


def test_missing_ptd_is_a_named_error(external_bundle, tiny_ckpt, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(external_bundle[0], copy)
    (copy / "model.ptd").unlink()
    opened = read_bundle(copy, check=False)
    entry = opened.manifest.operating_points[0]
    with pytest.raises(ExternalWeightsError, match="model.ptd is missing"):
        ExecuTorchRunner(copy, None, opened.manifest).run(entry, inputs_for(entry, 0))
    result = runner.invoke(app, ["verify", str(copy), "--checkpoint", str(tiny_ckpt)])
    assert result.exit_code == 1 and "model.ptd: missing" in result.stderr
    # (the runtime itself must never be given the .pte alone: executorch 1.5.1's load_method crashes the process
    # with a segmentation fault instead of an error when the external data is absent; docs/android.md)


def test_altered_ptd_is_a_named_error(external_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(external_bundle[0], copy)
    data = bytearray((copy / "model.ptd").read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only the hash can tell
    (copy / "model.ptd").write_bytes(bytes(data))
    opened = read_bundle(copy, check=False)
    entry = opened.manifest.decoder
    with pytest.raises(ExternalWeightsError, match="not the weights file this bundle was exported with"):
        ExecuTorchRunner(copy, None, opened.manifest).run(entry, inputs_for(entry, 0))
    with pytest.raises(BundleError, match="model.ptd: sha256 differs"):
        read_bundle(copy)
    result = runner.invoke(
        app, ["generate", str(copy), "-p", "a red circle", "-o", str(tmp_path / "x.png"), "--steps", "1"]
    )
    assert result.exit_code == 1 and "not the weights file" in result.stderr, result.stderr


def test_data_file_is_confined_and_hashed(external_bundle):
    doc = json.loads((external_bundle[0] / "manifest.json").read_text())
    check_paths(external_bundle[0], doc)  # as written: fine
    for bad, words in (
        ("../model.ptd", "not a normalized path"),
        ("/tmp/model.ptd", "absolute"),
        ("other.ptd", "hashed file list does not hold"),
    ):
        broken = json.loads(json.dumps(doc))
        broken["decoder"]["data_file"] = bad
        with pytest.raises(BundlePathError, match=words):
            check_paths(external_bundle[0], broken)


def test_inline_form_is_unchanged(android_bundle):
    doc = json.loads((android_bundle[0] / "manifest.json").read_text())
    assert [f["path"] for f in doc["files"]] == ["model.pte"]
    assert all("data_file" not in e for e in [*doc["operating_points"], doc["decoder"], doc["text_encoder"]])


def test_targets_without_external_weights_refuse_before_any_work(tiny_ckpt, tmp_path):
    out = tmp_path / "ios"
    result = runner.invoke(app, ["export", str(tiny_ckpt), "--target", "ios", "-o", str(out), "--weights", "external"])
    assert result.exit_code == 1 and "--weights external is not offered for ios" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_reexport_is_byte_identical(external_bundle, tiny_ckpt, tmp_path):
    again = tmp_path / "again"
    export_cli(tiny_ckpt, "android", again, "--ops", OPS, "--weights", "external")
    for name in ("model.pte", "model.ptd", "manifest.json"):
        assert (again / name).read_bytes() == (external_bundle[0] / name).read_bytes(), name


def test_native_runner_loads_the_external_form(external_bundle, tmp_path):
    """elasticdit-run opens model.pte with its model.ptd: every method equals the Python runtime's on the same
    bundle, and a whole generation equals `generate`'s."""
    from test_native_support import PROMPT, assert_methods_equal, compare_images, png, runner_for

    native = runner_for("host")
    opened = read_bundle(external_bundle[0])
    python = ExecuTorchRunner(opened.path, None, opened.manifest)
    index = native.methods(opened.path, tmp_path)
    assert [m["method"] for m in index["methods"]] == ["encode_text", "denoise_r1_d4", "denoise_r2_d2", "decode"]
    assert_methods_equal(index, tmp_path, lambda method, inputs: python.run(opened.manifest.method(method), inputs))
    base = ["generate", str(opened.path), "-p", PROMPT, "--op", "r2_d2", "--steps", "2", "--seed", "1"]
    for extra, name in (([], "python.png"), (["--runner", "native"], "native.png")):
        result = runner.invoke(app, [*base, *extra, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output + result.stderr
    figures = compare_images(png(tmp_path / "python.png"), png(tmp_path / "native.png"))
    assert figures["psnr_db"] >= 45 and figures["within_1_lsb"] >= 0.99, figures


@pytest.mark.parametrize(
    "case, message",
    [
        ("unlisted", "keeps its weights in"),  # named in an entry, not in `files`, absent: the program refuses
        ("outside", "names data file '../model.ptd' outside the bundle"),
    ],
)
def test_native_runner_refuses_a_missing_or_escaping_ptd(external_bundle, tmp_path, case, message):
    """Never the .pte alone (ExecuTorch 1.5.1 would crash in load_method): a named BundleError instead."""
    import numpy as np
    from test_native_support import PROMPT, latent_shape, runner_for

    from elasticdit.generation import noise_for
    from elasticdit.native.errors import NativeRunError

    native = runner_for("host")
    copy = tmp_path / "copy"
    shutil.copytree(external_bundle[0], copy)
    doc = json.loads((copy / "manifest.json").read_text())
    if case == "unlisted":
        (copy / "model.ptd").unlink()
        doc["files"] = [f for f in doc["files"] if f["path"] != "model.ptd"]
    else:
        for entry in [*doc["operating_points"], doc["decoder"], doc["text_encoder"]]:
            entry["data_file"] = "../model.ptd"
    (copy / "manifest.json").write_text(json.dumps(doc))
    noise = tmp_path / "noise.npy"
    np.save(noise, noise_for(0, latent_shape(copy)).numpy())
    with pytest.raises(NativeRunError) as info:
        native.run("generate", str(copy), "--prompt", PROMPT, "--noise", str(noise), "--op", "r2_d2")
    assert info.value.kind == "BundleError" and message in info.value.message, info.value.message


@pytest.mark.slow
def test_multi_resolution_external_bundle(tiny_ckpt, tmp_path):
    """Several resolutions in the external form: every method of every resolution loads from the one .ptd, each
    point states the weight bytes of its own resolution's function, and verify passes on all of them."""
    from elasticdit.checkpoint import load_checkpoint
    from elasticdit.footprint import WeightStorage, point_key, weight_plan
    from elasticdit.operating_points import select

    out = tmp_path / "multi"
    sizes = [(128, 128), (128, 192)]
    args = ["--ops", "r2_d2", "--weights", "external", "--resolution", "128x128", "--resolution", "128x192"]
    export_cli(tiny_ckpt, "android", out, *args)
    doc = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in doc["files"]] == ["model.ptd", "model.pte"]
    entries = [*doc["operating_points"], doc["decoder"], *doc.get("decoders", []), doc["text_encoder"]]
    assert sorted(e["method"] for e in entries) == [
        "decode",
        "decode_128x192",
        "denoise_r2_d2",
        "denoise_r2_d2_128x192",
        "encode_text",
    ]
    assert all(e["file"] == "model.pte" and e["data_file"] == "model.ptd" for e in entries)
    cfg = load_checkpoint(tiny_ckpt).cfg
    plan = weight_plan(cfg, select(cfg, ["r2_d2"]), sizes).footprint(WeightStorage())
    got = {e["method"]: e["weight_bytes"] for e in doc["operating_points"]}
    assert got == {
        "denoise_r2_d2": plan.points[point_key("r2_d2", sizes[0], sizes[0])],
        "denoise_r2_d2_128x192": plan.points[point_key("r2_d2", sizes[1], sizes[0])],
    }
    assert got["denoise_r2_d2_128x192"] > got["denoise_r2_d2"]  # its position codes cover more tokens
    result = runner.invoke(app, ["verify", str(out), "--checkpoint", str(tiny_ckpt), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    assert len(json.loads(result.stdout)["methods"]) == 5
