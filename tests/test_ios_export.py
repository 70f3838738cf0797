"""iOS bundles on a tiny checkpoint: a Core ML multifunction package, checked on Linux (structure + the converted
graph's numerics with the package's weights), weights stored once, reproducible bytes, named errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.errors import BundleError, ExportError
from elasticdit.lowering import export_program
from elasticdit.slicing import ExportUnit
from elasticdit.specs import MethodKind, TensorSpec
from elasticdit.targets import TARGETS
from elasticdit.targets.ios import convert, package
from elasticdit.targets.ios import runner as ios_runner
from elasticdit.verify import verify_bundle

runner = CliRunner()
OPS = "r1_d4,r2_d2"
WEIGHTS = "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin"


def export(ckpt, out, *args: str) -> dict:
    result = runner.invoke(app, ["export", str(ckpt), "--target", "ios", "-o", str(out), "--json", *args])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def verify(out, ckpt) -> dict:
    result = runner.invoke(app, ["verify", str(out), "--checkpoint", str(ckpt), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def bundle(ios_bundle):
    return ios_bundle


def test_package_functions_and_features_match_the_manifest(bundle):
    out, summary = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "ios" and manifest["recipe"]["name"] == "ios-fp16"
    assert [f["path"] for f in manifest["files"]] == [
        "model.mlpackage/Data/com.apple.CoreML/model.mlmodel",
        WEIGHTS,
        "model.mlpackage/Manifest.json",
    ]
    spec = package.load_spec(out / "model.mlpackage").get_spec()
    functions = {f.name: f for f in spec.description.functions}
    methods = ["denoise_r1_d4", "denoise_r2_d2", "decode", "encode_text"]
    assert list(functions) == methods and spec.description.defaultFunctionName == "denoise_r1_d4"
    entries = [*manifest["operating_points"], manifest["decoder"], manifest["text_encoder"]]
    for entry in entries:
        f = functions[entry["method"]]
        assert entry["file"] == "model.mlpackage"
        assert package.feature_specs(f.input) == entry["inputs"] and package.feature_specs(f.output) == entry["outputs"]
    # Core ML has no int64 inputs: the manifest says what the package takes
    assert manifest["text_encoder"]["inputs"] == [{"name": "tokens", "shape": [1, 5], "dtype": "int32"}]
    assert manifest["operating_points"][0]["inputs"][0] == {
        "name": "latent",
        "shape": [1, 16, 16, 16],
        "dtype": "float32",
    }
    report = manifest["backend_report"]["denoise_r1_d4"]
    assert 0 < report["weight_bytes"] < (out / WEIGHTS).stat().st_size
    # r1 is sparse and runs the `slices` SSBA lowering: an explicit max-subtracted softmax for the image and
    # the text queries of each of the 4 blocks, and no gather; r2's 2x2 tile grid fits one window: dense. Every
    # norm is row-scaled for fp16 (docs/ios.md): one reduce_max of abs each, and no layer_norm fusion
    hist = report["op_histogram"]
    assert hist["reduce_max"] - hist["abs"] == 8 and "softmax" not in hist and "gather" not in hist
    assert hist["linear"] > 0 and hist["abs"] > 0 and "layer_norm" not in hist
    assert manifest["backend_report"]["denoise_r2_d2"]["op_histogram"]["softmax"] == 2
    assert report["compressed_weights"] == {} and report["precision"] == "fp16"
    assert report["ane"]["max_rank"] <= 5 and all(flag["source"] for flag in report["ane"]["flags"])
    # the timestep sinusoid is kept fp32 on purpose (fp16's spacing at 1000 is 0.5), and reported as such
    assert {f["rule"]: f["count"] for f in report["ane"]["flags"]}.get("fp32_ops", 0) >= 2
    gathers = {f["rule"]: f["count"] for f in manifest["backend_report"]["encode_text"]["ane"]["flags"]}
    assert gathers["gather"] == 1  # the embedding lookup
    assert summary["methods"] == sorted(methods)


def test_verify_checks_the_converted_graph_in_fp16_with_the_package_weights(bundle, tiny_ckpt):
    out, _ = bundle
    report = verify(out, tiny_ckpt)
    assert [m["method"] for m in report["methods"]] == ["denoise_r1_d4", "denoise_r2_d2", "decode", "encode_text"]
    for m in report["methods"]:
        assert m["metric"] == "rel_err" and m["value"] <= m["limit"] and m["passed"]
        assert "float16 compute emulated" in m["reference"]  # the same numerics as the package
        assert m["snr_db"] < 100  # fp16 really emulated: not float32-exact
        assert m["min_snr_db"] == 40 <= m["snr_db"]  # fp16 methods are held to a floor against float32 too
        assert "needs macOS" in m["note"] and "float16" in m["note"]


class _Sinusoid(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-torch.arange(64) / 8.0).reshape(1, 64))
        self.proj = torch.nn.Linear(128, 8)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.reshape(-1, 1) * 1000.0 * self.freqs
        return self.proj(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


def test_fp16_emulation_keeps_the_timestep_sinusoid_fp32():
    module = _Sinusoid().eval()
    t = torch.tensor([0.937])
    ep = torch.export.export(module, (t,)).run_decompositions({})
    island = {n.target for n in ios_runner.fp32_island(ep.graph)}
    assert {torch.ops.aten.sin.default, torch.ops.aten.cos.default, torch.ops.aten.mul.Tensor} <= island
    assert torch.ops.aten.linear.default not in island and torch.ops.aten.cat.default not in island
    ref = module(t)
    emulated = ios_runner.run_graph(ep, {}, [t], half=True)[0]
    naive = module.half()(t.half()).float()  # everything fp16: sigma * 1000 has a spacing of 0.5
    assert (emulated - ref).norm() < 0.2 * (naive - ref).norm()


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m["text_encoder"]["inputs"][0].update(dtype="int64"), "function encode_text inputs"),
        (lambda m: m["operating_points"][1]["outputs"][0].update(name="eps"), "function denoise_r2_d2 outputs"),
        (lambda m: m.update(decoder=None), "do not match the manifest's methods"),
        (
            lambda m: m["backend_report"]["denoise_r1_d4"].update(graph_sha256="0" * 64),
            "the graph rebuilt for denoise_r1_d4 differs from the one converted at export",
        ),
    ],
)
def test_package_manifest_mismatch_is_a_named_error(bundle, tiny_ckpt, tmp_path, edit, words):
    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=words):
        verify_bundle(copy, tiny_ckpt)


def test_tampered_weights_are_a_named_error(bundle, tiny_ckpt, tmp_path):
    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / WEIGHTS).write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(copy), "--checkpoint", str(tiny_ckpt)])
    assert result.exit_code == 1 and "weight.bin: sha256 differs" in result.stderr


@pytest.mark.slow
def test_reexport_is_byte_identical(bundle, tiny_ckpt, tmp_path):
    out, _ = bundle
    again = tmp_path / "again"
    export(tiny_ckpt, again, "--ops", OPS)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


@pytest.fixture(scope="module", params=["ios-int8", "ios-palettize4"])
def compressed(request, bare_ckpt, tmp_path_factory):
    """The full point and a shallower one over a subset of its blocks, weights compressed per function."""
    out = tmp_path_factory.mktemp(request.param) / "bundle"
    return request.param, out, export(bare_ckpt, out, "--ops", "r1_d4,r1_d2", "--recipe", request.param)


@pytest.mark.slow
def test_weights_are_stored_once_after_compression(compressed):
    recipe, out, summary = compressed
    report = summary["backend_report"]
    op = {"ios-int8": "constexpr_blockwise_shift_scale", "ios-palettize4": "constexpr_lut_to_dense"}[recipe]
    for method in ("denoise_r1_d4", "denoise_r1_d2"):
        assert set(report[method]["compressed_weights"]) == {op}
    shallow = report["denoise_r1_d2"]
    assert shallow["weight_blobs"] == shallow["weight_blobs_shared"] > 0  # every blob it uses is r1_d4's too
    assert package.duplicate_blobs(out / "model.mlpackage") == 0
    # the package holds little more than the full point alone needs (a one-point bundle's weight.bin)
    weight_bin = next(f["bytes"] for f in summary["files"] if f["path"] == WEIGHTS)
    assert weight_bin / report["denoise_r1_d4"]["weight_bytes"] <= 1.05


@pytest.mark.slow
def test_compressed_recipes_report_snr(compressed, bare_ckpt):
    _, out, _ = compressed
    for check in verify(out, bare_ckpt)["methods"]:
        assert check["metric"] == "rel_err" and check["passed"] and check["value"] <= check["limit"]
        assert check["snr_db"] >= check["min_snr_db"] >= 17
        assert check["snr_db"] < 80  # the compressed weights really are the ones checked
        assert "decoded from model.mlpackage" in check["note"]


def test_failure_midway_leaves_dir_untouched(bundle, bare_ckpt, tmp_path, monkeypatch):
    out, _ = bundle
    dest = tmp_path / "bundle"
    shutil.copytree(out, dest)
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    def broken(packages, target, default):
        target.mkdir()
        (target / "Manifest.json").write_text("partial")
        raise RuntimeError("injected failure while merging")

    monkeypatch.setattr(convert, "merge", broken)
    result = runner.invoke(
        app, ["export", str(bare_ckpt), "--target", "ios", "--ops", "r2_d2", "-o", str(dest), "--force"]
    )
    assert result.exit_code != 0
    assert {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


class _ComplexRotation(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.view_as_complex(x.reshape(1, 4, 2))
        return torch.view_as_real(z * z).reshape(1, 8)


def test_conversion_failure_names_the_method_and_the_op():
    unit = ExportUnit(
        "denoise_r9_d1",
        MethodKind.DENOISE,
        _ComplexRotation(),
        (torch.randn(1, 8),),
        [TensorSpec("latent", [1, 8])],
        [TensorSpec("velocity", [1, 8])],
    )
    with pytest.raises(ExportError, match=r"Core ML conversion of denoise_r9_d1 failed at torch op .*view_as_complex"):
        convert.convert(unit, export_program(unit, TARGETS["ios"].formulation), "fp16")


def _palettized_tables(weights: list[torch.Tensor], compress_with) -> list[tuple]:
    """Each constexpr_lut_to_dense op's (name, lut, indices) after compressing a two-layer model holding `weights`."""
    import coremltools as ct

    model = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False), torch.nn.Linear(64, 64, bias=False)).eval()
    with torch.no_grad():
        for layer, w in zip(model, weights, strict=True):
            layer.weight.copy_(w)
    ep = torch.export.export(model, (torch.zeros(1, 64),)).run_decompositions({})
    mlmodel = ct.convert(ep, minimum_deployment_target=ct.target.iOS18)
    compressed = compress_with(mlmodel)
    return [
        (op.name, op.lut.val, op.indices.val)
        for op in compressed._mil_program.functions["main"].operations
        if op.op_type == "constexpr_lut_to_dense"
    ]


def test_shared_palettes_give_kmeans_bytes_and_cluster_each_group_once():
    import coremltools.optimize.coreml as cto

    from elasticdit.quant.coreml import Palettes, compress, compression_config
    from elasticdit.recipes import load_recipe

    recipe = load_recipe("ios-palettize4", TARGETS["ios"], TARGETS)
    op = compression_config(recipe).op_type_configs["linear"]
    kmeans = cto.OpPalettizerConfig(
        mode="kmeans",
        nbits=recipe.nbits,
        granularity=op.granularity,
        group_size=op.group_size,
        weight_threshold=op.weight_threshold,
    )

    def reference(mlmodel):
        return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=kmeans))

    def ours(palettes):
        return lambda mlmodel: compress(mlmodel, recipe, "denoise_r1_d2", palettes)

    def same(x, y) -> bool:
        if not len(x) == len(y) > 0:
            return False
        return all(
            p[0] == q[0] and np.array_equal(p[1], q[1]) and np.array_equal(p[2], q[2])
            for p, q in zip(x, y, strict=True)
        )

    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(64, 64, generator=gen) for _ in range(3))
    palettes = Palettes(recipe.nbits)
    groups = 64 // op.group_size  # per layer: 64 output channels in groups
    assert same(_palettized_tables([a, b], ours(palettes)), _palettized_tables([a, b], reference))
    assert (palettes.clustered, palettes.reused) == (2 * groups, 0)
    # a second function holding one of the same weights: its groups are not clustered again, the tables still k-means'
    assert same(_palettized_tables([a, c], ours(palettes)), _palettized_tables([a, c], reference))
    assert (palettes.clustered, palettes.reused) == (3 * groups, groups)

    class ByShape(Palettes):  # mutation: a cache that does not look at the bytes
        @staticmethod
        def key(group: np.ndarray) -> bytes:
            return str(group.shape).encode()

    wrong = ByShape(recipe.nbits)
    _palettized_tables([a, b], ours(wrong))
    assert not same(_palettized_tables([c, b], ours(wrong)), _palettized_tables([c, b], reference))
