"""verify against a reference of the artifact's own numerics: correct bundles pass under every target's float and
quantized recipes; bundles with a wrong lowering (dense attention on an SSBA checkpoint), a dropped block or
weights perturbed by 1% fail, naming the method; editing the manifest's limits passes nothing (issue 21, item 5)."""

from __future__ import annotations

import json
import shutil

import pytest
from mutants import MUTATIONS, claim_checkpoint, injected, perturbed_checkpoint
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.exporter import ExportRequest, export_bundle

runner = CliRunner()
POINT = "r1_d2"  # ratio 1: the SSBA mask removes most of the attention; two blocks
RECIPES = ["android-fp32", "android-int8", "android-8da4w", "ios-fp16", "ios-palettize4", "onnx-fp32", "onnx-int8"]


def export(ckpt, recipe: str, out, monkeypatch=None, mutation: str | None = None):
    request = ExportRequest(ckpt, recipe.split("-")[0], out, recipe=recipe, ops=[POINT], progress=False)
    if mutation in ("dense_attention", "dropped_block"):
        with injected(monkeypatch, mutation):
            export_bundle(request)
    else:
        export_bundle(request)
    return out


def verify(out, ckpt, *args: str):
    return runner.invoke(app, ["verify", str(out), "--checkpoint", str(ckpt), *args])


@pytest.fixture(scope="module")
def perturbed(bare_ckpt, tmp_path_factory):
    return perturbed_checkpoint(bare_ckpt, tmp_path_factory.mktemp("perturbed") / "perturbed.safetensors")


@pytest.fixture(scope="module")
def correct(bare_ckpt, tmp_path_factory):
    made = {}

    def get(recipe: str):
        if recipe not in made:
            made[recipe] = export(bare_ckpt, recipe, tmp_path_factory.mktemp(recipe) / "bundle")
        return made[recipe]

    return get


@pytest.fixture(scope="module")
def wrong(bare_ckpt, tmp_path_factory):
    """The bundle exported with `mutation` injected, once per (recipe, mutation): read it, or copy it to edit."""
    made = {}

    def get(recipe: str, mutation: str):
        if (recipe, mutation) not in made:
            out = tmp_path_factory.mktemp(f"{recipe}-{mutation}") / "bundle"
            with pytest.MonkeyPatch.context() as monkeypatch:
                made[recipe, mutation] = export(bare_ckpt, recipe, out, monkeypatch, mutation)
        return made[recipe, mutation]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_a_correct_bundle_passes_against_its_own_numerics(correct, bare_ckpt, recipe):
    result = verify(correct(recipe), bare_ckpt, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["recipe_differences"] == [] and report["noise_levels"] == [0.98, 0.5, 0.02]
    (check,) = report["methods"]
    assert [level["sigma"] for level in check["levels"]] == [0.98, 0.5, 0.02]
    assert check["metric"] == "rel_err" and check["value"] <= check["limit"]
    quantized = recipe.split("-")[1] not in ("fp32", "fp16")
    assert ("float32" in check["reference"]) == (recipe.endswith("fp32") and not recipe.startswith("ios"))
    if recipe.startswith(("android", "onnx")):  # the recipe's lowering checked against masked, in float32
        assert 0 <= check["lowering_rel_err"] <= 1e-6
    if quantized and not recipe.startswith("ios"):  # rebuilt with the same lowering: equal to float rounding
        assert check["value"] <= 1e-6
    if quantized:  # the SNR against float32 is reported and held to the recipe's floor
        assert check["min_snr_db"] is not None and check["min_snr_db"] <= check["snr_db"] < 80
    elif recipe == "ios-fp16":  # float, but computed in fp16: held to the float16 floor against float32
        assert check["min_snr_db"] == 40 <= check["snr_db"] < 100
    else:
        assert check["min_snr_db"] is None


@pytest.mark.slow
@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_a_wrong_bundle_fails_naming_the_method(correct, wrong, bare_ckpt, perturbed, tmp_path, recipe, mutation):
    if mutation == "perturbed_weights":
        # weights 1% away from the checkpoint's: the correct bundle checked against the perturbed checkpoint, which
        # it claims to come from. verify builds its reference (quantized for quantized recipes) from the checkpoint
        # it is given, so this is the same distance as a bundle exported from the perturbed weights checked against
        # the right checkpoint, without an export per recipe
        out = shutil.copytree(correct(recipe), tmp_path / "bundle")
        claim_checkpoint(out, perturbed)
        result = verify(out, perturbed)
    else:
        result = verify(wrong(recipe, mutation), bare_ckpt)
    assert result.exit_code == 1, result.output
    assert f"denoise_{POINT}" in result.stderr, result.stderr


@pytest.mark.slow
def test_loosened_manifest_limits_pass_no_bad_bundle(wrong, bare_ckpt, tmp_path):
    out = shutil.copytree(wrong("android-int8", "dense_attention"), tmp_path / "bundle")
    path = out / "manifest.json"
    doc = json.loads(path.read_text())
    doc["recipe"]["verify"] = {"max_rel_error": 1.0, "quantized_max_rel_error": 1.0, "min_snr_db": 0.0}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    result = verify(out, bare_ckpt, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert not report["passed"] and report["methods"][0]["limit"] < 1e-2
    assert any(d.startswith("verify.min_snr_db: this tool's recipe has 33") for d in report["recipe_differences"])
    table = verify(out, bare_ckpt)
    assert "differs from this tool's" in table.stdout and f"denoise_{POINT}" in table.stderr


@pytest.mark.slow
def test_a_fault_the_reference_shares_is_caught_by_the_lowering_check(bare_ckpt, tmp_path, monkeypatch):
    """A quantized recipe's reference is rebuilt with the recipe's own lowering (`tiles`), so a fault in that
    lowering's code would sit in bundle and reference alike: here `tiles` computes plain dense attention, at export
    and at verify. verify also checks the lowering against masked attention in float32, and fails on it."""
    from elasticdit.ssba import lowering
    from elasticdit.ssba.cores import DenseAttention

    monkeypatch.setitem(lowering._LOWERINGS, "tiles", lambda head_dim, pattern: DenseAttention(head_dim))
    out = export(bare_ckpt, "android-int8", tmp_path / "bundle")
    result = verify(out, bare_ckpt, "--json")
    assert result.exit_code == 1, result.output
    (check,) = json.loads(result.stdout)["methods"]
    assert check["value"] <= check["limit"], check  # the artifact equals the reference that shares the fault
    assert check["lowering_rel_err"] > 1e-2 and "'tiles' attention differs from masked attention" in check["note"]
    assert f"denoise_{POINT}" in verify(out, bare_ckpt).stderr


def test_dense_attention_on_an_ssba_checkpoint_is_refused_at_export(bare_ckpt, tmp_path):
    recipe = tmp_path / "dense.toml"
    recipe.write_text('name = "android-dense"\ntarget = "android"\n[lowering]\nattention = "dense"\n')
    out = tmp_path / "bundle"
    cmd = ["export", str(bare_ckpt), "--target", "android", "--recipe", str(recipe), "--ops", "r1_d2,r2_d2"]
    result = runner.invoke(app, [*cmd, "-o", str(out)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "lowers attention as 'dense', but the checkpoint's SSBA masks r1_d2" in result.stderr
    assert not out.exists()
