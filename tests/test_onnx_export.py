"""ONNX bundles on a tiny checkpoint: a graph per method sharing one weights.bin, run in ONNX Runtime by verify,
weights stored once (also after int8 quantization), reproducible bytes, named errors."""

from __future__ import annotations

import hashlib
import json
import shutil

import onnx
import pytest
from onnx.external_data_helper import _get_all_tensors, uses_external_data
from typer.testing import CliRunner

from elasticdit.bundle.reader import read_bundle
from elasticdit.cli import app
from elasticdit.errors import BundleError
from elasticdit.targets.onnx.runtime import OnnxRunner
from elasticdit.verify import verify_bundle

runner = CliRunner()
OPS = "r1_d4,r2_d2"
METHODS = ["denoise_r1_d4", "denoise_r2_d2", "decode", "encode_text"]


def export(ckpt, out, *args: str) -> dict:
    result = runner.invoke(app, ["export", str(ckpt), "--target", "onnx", "-o", str(out), "--json", *args])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def verify(out, ckpt) -> dict:
    result = runner.invoke(app, ["verify", str(out), "--checkpoint", str(ckpt), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def external_ranges(path) -> list[tuple[int, int]]:
    model = onnx.load(str(path), load_external_data=False)
    ranges = []
    for t in _get_all_tensors(model):
        if uses_external_data(t):
            info = {e.key: e.value for e in t.external_data}
            assert info["location"] == "weights.bin"
            ranges.append((int(info["offset"]), int(info["length"])))
        else:
            assert len(t.raw_data) < 1024, t.name  # only small tensors stay inline
    return ranges


@pytest.fixture(scope="module")
def bundle(onnx_bundle):
    return onnx_bundle


def test_graphs_match_the_manifest_and_share_one_weights_file(bundle):
    out, summary = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "onnx" and manifest["recipe"]["name"] == "onnx-fp32"
    assert [f["path"] for f in manifest["files"]] == sorted([f"{m}.onnx" for m in METHODS] + ["weights.bin"])
    entries = [*manifest["operating_points"], manifest["decoder"], manifest["text_encoder"]]
    assert [e["method"] for e in entries] == METHODS
    weights = (out / "weights.bin").read_bytes()
    ranges = set()
    for entry in entries:
        assert entry["file"] == f"{entry['method']}.onnx"
        onnx.checker.check_model(str(out / entry["file"]))  # path form: checks the external references too
        model = onnx.load(str(out / entry["file"]), load_external_data=False)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
        assert [i.name for i in model.graph.input] == [s["name"] for s in entry["inputs"]]
        assert [o.name for o in model.graph.output] == [s["name"] for s in entry["outputs"]]
        ranges |= set(external_ranges(out / entry["file"]))
        assert manifest["backend_report"][entry["method"]]["op_histogram"]
    contents = [hashlib.sha256(weights[o : o + n]).hexdigest() for o, n in sorted(ranges)]
    assert len(contents) == len(set(contents))  # no tensor stored twice
    assert manifest["text_encoder"]["inputs"][0]["dtype"] == "int64"
    assert summary["methods"] == sorted(METHODS)


def test_verify_runs_every_graph_in_onnx_runtime(bundle, tiny_ckpt):
    out, _ = bundle
    report = verify(out, tiny_ckpt)
    assert [m["method"] for m in report["methods"]] == METHODS
    assert all(m["metric"] == "rel_err" and m["value"] <= 1e-4 and m["passed"] for m in report["methods"])


def test_host_runner_uses_the_thread_count(bundle):
    out, _ = bundle
    runner_ = OnnxRunner(out, read_bundle(out).manifest, threads=1)
    assert runner_.session("decode").get_session_options().intra_op_num_threads == 1
    with pytest.raises(BundleError, match="no method 'denoise_r4_d2'"):
        runner_.session("denoise_r4_d2")


def test_tampered_weights_are_a_named_error(bundle, tiny_ckpt, tmp_path):
    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / "weights.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "weights.bin").write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(copy), "--checkpoint", str(tiny_ckpt)])
    assert result.exit_code == 1 and "weights.bin: sha256 differs" in result.stderr


def test_renamed_graph_input_is_a_named_error(bundle, tiny_ckpt, tmp_path):
    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["decoder"]["inputs"][0]["name"] = "z"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"decode.onnx takes \['latent'\]"):
        verify_bundle(copy, tiny_ckpt)


@pytest.mark.slow
def test_reexport_is_byte_identical(bundle, onnx_reexport):
    """conftest's re-export names two schedules besides (test_schedules checks them): every graph and weights file
    is byte-identical, and the manifest is, once its `schedules` key is taken out."""
    out, again = bundle[0], onnx_reexport[0]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        if name != "manifest.json":
            assert (again / name).read_bytes() == (out / name).read_bytes(), name
    doc = json.loads((again / "manifest.json").read_text())
    assert doc.pop("schedules")
    assert (json.dumps(doc, indent=2) + "\n").encode() == (out / "manifest.json").read_bytes()


@pytest.fixture(scope="module", params=["onnx-fp32", "onnx-int8"])
def two_points(request, bare_ckpt, tmp_path_factory):
    """The full point and a shallower one over a subset of its blocks."""
    out = tmp_path_factory.mktemp(request.param) / "bundle"
    return request.param, out, export(bare_ckpt, out, "--ops", "r1_d4,r1_d2", "--recipe", request.param)


@pytest.mark.slow
def test_weights_are_stored_once(two_points):
    recipe, out, summary = two_points
    full = set(external_ranges(out / "denoise_r1_d4.onnx"))
    shallow = set(external_ranges(out / "denoise_r1_d2.onnx"))
    assert shallow and shallow <= full  # every tensor the shallow graph reads is one the full graph reads
    weights = (out / "weights.bin").stat().st_size
    needed = sum(n for _, n in full)  # what a bundle of the full point alone would store
    assert weights / needed <= 1.10, (weights, needed)
    if recipe == "onnx-fp32":  # int8 graphs carry their small per-channel scales inline: see docs/onnx.md
        alone = (out / "denoise_r1_d4.onnx").stat().st_size + needed
        assert summary["bytes"] / alone <= 1.10, (summary["bytes"], alone)


@pytest.mark.slow
@pytest.mark.parametrize("two_points", ["onnx-int8"], indirect=True)
def test_int8_recipe_reports_snr(two_points, bare_ckpt):
    _, out, summary = two_points
    ops = summary["backend_report"]["denoise_r1_d2"]["op_histogram"]
    assert ops.get("MatMulInteger", 0) > 0 and ops.get("DynamicQuantizeLinear", 0) > 0
    assert ops.get("MatMul", 0) > 0  # attention and the norms' means stay float
    assert summary["backend_report"]["denoise_r1_d4"]["quantization"] == "dynamic-int8"
    for check in verify(out, bare_ckpt)["methods"]:
        assert check["metric"] == "rel_err" and check["passed"] and check["value"] <= check["limit"]
        assert check["snr_db"] >= check["min_snr_db"] >= 20
        assert check["snr_db"] < 80  # really quantized


def held_bytes(model) -> int:
    """Tensor bytes a graph holds in memory."""
    return sum(len(t.raw_data) for t in _get_all_tensors(model))


@pytest.mark.slow
def test_one_method_is_in_memory_at_a_time(bare_ckpt, tmp_path, monkeypatch):
    """onnx-int8 converts each method, releases the checkpoint pages its conversion read, quantizes and writes it,
    before converting the next; what is written keeps no weight bytes in memory, and quantizing empties the float
    graph it was given (issue 25: the writer held every graph until the end, and a second copy of each float graph
    beside ORT's)."""
    from elasticdit.targets.onnx import graphs

    calls: list[tuple[str, str, int]] = []
    convert, quantize, add = graphs.export_graph, graphs.quantize, graphs.SharedWeights.add

    def converted(lowered):
        model = convert(lowered)
        calls.append(("convert", lowered.method, held_bytes(model)))
        return model

    def quantized(model, recipe, method):
        result = quantize(model, recipe, method)
        calls.append(("quantize", method, held_bytes(model)))  # the float graph it was given, afterwards
        return result

    def added(self, name, model):
        info = add(self, name, model)
        calls.append(("write", name, held_bytes(model)))
        return info

    from elasticdit.checkpoint import Checkpoint

    release = Checkpoint.release_pages

    def released(self):
        calls.append(("release", "", 0))
        return release(self)

    monkeypatch.setattr(Checkpoint, "release_pages", released)
    monkeypatch.setattr(graphs, "export_graph", converted)
    monkeypatch.setattr(graphs, "quantize", quantized)
    monkeypatch.setattr(graphs.SharedWeights, "add", added)
    export(bare_ckpt, tmp_path / "bundle", "--ops", "r1_d4,r1_d2", "--recipe", "onnx-int8")
    steps = [(step, method) for step, method, _ in calls]
    steps = steps[steps.index(("convert", "denoise_r1_d4")) :]  # pages are released after loading and lowering too
    per_method = ("convert", "release", "quantize", "write")
    assert steps == [(s, "" if s == "release" else m) for m in ("denoise_r1_d4", "denoise_r1_d2") for s in per_method]
    held = {(step, method): n for step, method, n in calls}
    assert held["convert", "denoise_r1_d4"] > 100_000  # the check sees a graph's weights
    for step, method, n in calls:
        if step != "convert":
            assert n < 1024 * 64, (step, method, n)  # only tensors under 1 KiB stay inline
