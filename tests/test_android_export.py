"""Android bundles end to end on a tiny checkpoint: export, verify in the ExecuTorch runtime, guarantees."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.targets.android import AndroidTarget
from elasticdit.verify import verify_bundle

runner = CliRunner()
OPS = "r1_d4,r2_d2"


def export(args: list[str]):
    return runner.invoke(app, ["export", *args])


@pytest.fixture(scope="module")
def bundle(android_bundle):
    return android_bundle


def test_manifest_describes_every_method(bundle, tiny_ckpt):
    out, summary = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "elasticdit-bundle" and manifest["version"] == 1 and manifest["target"] == "android"
    assert [p["name"] for p in manifest["operating_points"]] == ["r1_d4", "r2_d2"]
    full = manifest["operating_points"][0]
    assert full["method"] == "denoise_r1_d4" and full["file"] == "model.pte" and full["tokens"] == 64
    assert [i["name"] for i in full["inputs"]] == ["latent", "timestep", "text", "pooled"]
    assert full["inputs"][0]["shape"] == [1, 16, 16, 16] and full["outputs"][0]["name"] == "velocity"
    assert 0 < full["ssba_sparsity"] < full["ssba_image_sparsity"] < 1 and full["gflops"] > 0
    assert manifest["decoder"]["method"] == "decode" and manifest["text_encoder"]["method"] == "encode_text"
    assert manifest["decoder"]["outputs"][0]["shape"] == [1, 3, 128, 128]
    assert [f["path"] for f in manifest["files"]] == ["model.pte"]
    assert summary["files"] == manifest["files"] and summary["bundle"] == str(out)
    # all maths is delegated to XNNPACK; only the `tiles` SSBA gathers (sparse r1 layers) run outside
    # (getitem is tuple unpacking, not an op)
    reports = [manifest["backend_report"][p["method"]]["outside_ops"] for p in manifest["operating_points"]]
    assert set(reports[0]) == {"getitem", "aten_embedding_default", "aten_index_select_default"}, reports[0]
    assert set(reports[1]) <= {"getitem"}, reports[1]  # r2: a 4x4 tile grid fits one window, so dense


def test_verify_passes_in_the_executorch_runtime(bundle, tiny_ckpt):
    out, _ = bundle
    result = runner.invoke(app, ["verify", str(out), "--checkpoint", str(tiny_ckpt), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert [m["method"] for m in report["methods"]] == ["denoise_r1_d4", "denoise_r2_d2", "decode", "encode_text"]
    assert all(m["metric"] == "rel_err" and m["value"] <= 1e-4 for m in report["methods"])


def test_tampered_bundle_is_a_named_error(bundle, tiny_ckpt, tmp_path):
    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / "model.pte").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.pte").write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(copy), "--checkpoint", str(tiny_ckpt)])
    assert result.exit_code == 1 and "model.pte: sha256 differs" in result.stderr


def test_wrong_checkpoint_is_refused(bundle, tmp_path):
    from conftest import write_tiny

    out, _ = bundle
    other = write_tiny(tmp_path / "other.safetensors", seed=9, text_encoder=True)
    with pytest.raises(Exception, match="not the checkpoint this bundle was exported from"):
        verify_bundle(out, other)


@pytest.mark.slow
def test_reexport_is_byte_identical(bundle, tiny_ckpt, tmp_path):
    out, _ = bundle
    again = tmp_path / "again"
    result = export([str(tiny_ckpt), "--ops", OPS, "-o", str(again)])
    assert result.exit_code == 0, result.output
    for name in ("model.pte", "manifest.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_failure_midway_leaves_dir_untouched(bundle, tiny_ckpt, monkeypatch):
    out, _ = bundle
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(self, lowered, recipe, folder, report):
        (folder / "model.pte").write_bytes(b"partial")
        raise RuntimeError("injected failure while lowering")

    monkeypatch.setattr(AndroidTarget, "write", broken)
    result = export([str(tiny_ckpt), "--ops", OPS, "-o", str(out), "--force"])
    assert result.exit_code != 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--ops", "r3_d4"], "unknown operating point 'r3_d4'; valid: r1_d4, r1_d2, r2_d4, r2_d2"),
        (["--resolution", "96x96"], "SSBA tile 2 does not divide"),
        (["--recipe", "android-fp64"], "unknown recipe 'android-fp64'"),
        (["--recipe", "ios-fp16"], "recipe 'ios-fp16' is for target ios, not android"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tiny_ckpt, tmp_path, args, words):
    out = tmp_path / "b"
    result = export([str(tiny_ckpt), *args, "-o", str(out)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_and_existing_dir(tiny_ckpt, tmp_path):
    result = export([str(tmp_path / "nope.safetensors"), "-o", str(tmp_path / "b")])
    assert result.exit_code == 1 and "checkpoint not found" in result.stderr
    (tmp_path / "b").mkdir()
    result = export([str(tiny_ckpt), "--ops", "r2_d2", "-o", str(tmp_path / "b")])
    assert result.exit_code == 1 and "--force" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = export([str(tiny_ckpt), "--ops", "r2_d2", "-o", str(blocker / "b")])
    assert result.exit_code == 1 and "cannot write a bundle" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["android-int8", "android-8da4w"])
def test_quantized_recipes_run_and_report_snr_above_their_floor(tiny_ckpt, tmp_path, recipe):
    out = tmp_path / recipe
    result = export([str(tiny_ckpt), "--target", "android", "--recipe", recipe, "--ops", "r1_d4", "-o", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == recipe
    report = verify_bundle(out, tiny_ckpt)
    denoise = [m for m in report["methods"] if m["kind"] == "denoise"]
    assert [m["metric"] for m in denoise] == ["rel_err"] and denoise[0]["passed"], denoise
    assert recipe in denoise[0]["reference"]  # the quantized model itself, not the float one
    floor = {"android-int8": 33.0, "android-8da4w": 20.0}[recipe]
    assert denoise[0]["min_snr_db"] == floor and floor <= denoise[0]["snr_db"] < 120  # quantized: not bit-exact


def test_8da4w_quantizes_a_copy_that_shares_the_float_tensors(tiny_ckpt):
    """The quantized copy holds no second copy of the float weights (issue 25): what it does not quantize is the
    float modules' own tensors, and quantizing leaves the float modules' weights as they were."""
    import torch
    from torch import nn

    from elasticdit.checkpoint import load_checkpoint
    from elasticdit.operating_points import operating_points
    from elasticdit.quant.xnnpack import torchao_8da4w
    from elasticdit.recipes import load_recipe
    from elasticdit.slicing import export_units
    from elasticdit.targets import TARGETS

    models = load_checkpoint(tiny_ckpt).models()
    units = export_units(models, operating_points(models.cfg)[:2], [models.cfg.resolution], "tiles")
    before = {k: v.clone() for k, v in models.state_dict().items()}
    float_tensors = {id(p) for p in models.transformer.parameters()}
    copies = torchao_8da4w(models, units, load_recipe("android-8da4w", TARGETS["android"], TARGETS))
    after = models.state_dict()
    assert all(torch.equal(after[k], v) and type(after[k]) is torch.Tensor for k, v in before.items())
    quantized = copies[0].module
    assert quantized is not units[0].module and copies[1].module.blocks[0] is quantized.blocks[0]  # one copy
    linears = [m for m in quantized.modules() if isinstance(m, nn.Linear)]
    new = [m.weight for m in linears if type(m.weight.data) is not torch.Tensor]  # torchao's quantized tensors
    assert len(new) > len(linears) // 2
    kept = [p for p in quantized.parameters() if not any(p is w for w in new)]
    assert kept and all(id(p) in float_tensors for p in kept)  # norms, biases, embeddings: the float ones
