"""A converted tiny SD3 pipeline exported to bundles that carry their tokenizers (docs/design.md, "Manifest"):
the concat tokenizer's parts and files, its ids against the pipeline's tokenizers, its files hashed and confined,
and `generate --prompt --noise` on the bundle against `StableDiffusion3Pipeline(latents=the same noise)`."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from elasticdit.cli import app

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from sd3_tiny import PROMPTS, tiny_pipeline  # noqa: E402

runner = CliRunner()
STEPS = 3
SETTINGS = ["--steps", str(STEPS), "--json"]


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    """(pipeline, checkpoint path, root folder): a tiny SD3 with T5, converted with T5 kept."""
    root = tmp_path_factory.mktemp("sd3-bundle")
    pipe = tiny_pipeline()
    pipe.save_pretrained(root / "pipe")
    ck = root / "ck.safetensors"
    result = runner.invoke(app, ["convert", str(root / "pipe"), "-o", str(ck), "--t5", "keep"])
    assert result.exit_code == 0, result.output
    return pipe, ck, root


def _export(ck, out, target, *extra):
    if not out.exists():
        result = runner.invoke(app, ["export", str(ck), "--target", target, "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def onnx_bundle(sd3):
    _, ck, root = sd3
    return _export(ck, root / "onnx", "onnx")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


def test_bundle_carries_its_tokenizers(sd3, onnx_bundle):
    from elasticdit.bundle.reader import read_bundle
    from elasticdit.bundle.tokenizers import load_tokenizer

    pipe, _, _ = sd3
    opened = read_bundle(onnx_bundle)  # every file's sha256 checked
    tok = opened.manifest.text_encoder.tokenizer
    assert tok["kind"] == "concat" and [p["name"] for p in tok["parts"]] == ["clip_l", "clip_g", "t5"]
    clip_l, clip_g, t5 = tok["parts"]
    assert clip_l["vocab"] == "tokenizers/clip_l/vocab.json" and t5["file"] == "tokenizers/t5/tokenizer.json"
    assert (clip_l["length"], clip_g["length"], t5["length"]) == (77, 77, 256)
    assert clip_g["pad"] == pipe.tokenizer_2.pad_token_id != clip_l["pad"]  # SD3's second CLIP pads with "!"
    assert (clip_l["bos"], clip_l["eos"]) == (pipe.tokenizer.bos_token_id, pipe.tokenizer.eos_token_id)
    listed = {f["path"] for f in opened.manifest.files}
    assert {p[k] for p in tok["parts"] for k in ("vocab", "merges", "file") if k in p} <= listed
    tokenize = load_tokenizer(tok, onnx_bundle, opened.manifest.files)
    length = opened.manifest.text_encoder.inputs[0].shape[1]
    kwargs = {"padding": "max_length", "truncation": True}
    for prompt in PROMPTS:
        ids = tokenize(prompt)
        assert len(ids) == length == 77 + 77 + 256
        assert ids[:77] == pipe.tokenizer(prompt, max_length=77, **kwargs).input_ids
        assert ids[77:154] == pipe.tokenizer_2(prompt, max_length=77, **kwargs).input_ids
        assert ids[154:] == pipe.tokenizer_3(prompt, max_length=256, **kwargs).input_ids


def _broken_copy(bundle, tmp_path, edit):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    doc = json.loads((copy / "manifest.json").read_text())
    edit(copy, doc["text_encoder"]["tokenizer"]["parts"])
    (copy / "manifest.json").write_text(json.dumps(doc))
    return copy


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("outside", "BundlePathError"),
        ("unlisted", "BundlePathError"),
        ("tampered", "BundleError"),
    ],
)
def test_tokenizer_files_are_confined_and_hashed(onnx_bundle, tmp_path, case, error):
    from elasticdit import errors
    from elasticdit.generation import BundleSource

    def edit(copy, parts):
        if case == "outside":
            parts[0]["vocab"] = "../vocab.json"
        elif case == "unlisted":
            shutil.copy(copy / parts[0]["vocab"], copy / "extra.json")
            parts[0]["vocab"] = "extra.json"
        else:
            (copy / parts[1]["merges"]).write_text("#version: 0.2\na t</w>\n")

    copy = _broken_copy(onnx_bundle, tmp_path, edit)
    with pytest.raises(getattr(errors, error)) as info:
        BundleSource(copy).generate("a red cat", steps=1)
    assert "tokenizer" in str(info.value)


def _reference(pipe, noise, guidance, prompt="a red cat"):
    return pipe(
        prompt,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        latents=noise.clone(),
        output_type="np",
        height=64,
        width=64,
    ).images[0]


def _generate(bundle, noise_file, out, guidance, prompt="a red cat"):
    from PIL import Image

    args = ["generate", str(bundle), "--prompt", prompt, "--noise", str(noise_file), "-o", str(out)]
    result = runner.invoke(app, [*args, *SETTINGS, "--cfg", str(guidance)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["noise"] == str(noise_file) and summary["seed"] is None
    return np.asarray(Image.open(out), dtype=np.float64) / 255.0


def _parity(pipe, bundle, tmp_path, guidance, suffix):
    from safetensors.torch import save_file

    from elasticdit.generation import BundleSource

    noises = [torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (11, 12)]
    files = [tmp_path / f"noise{i}{suffix}" for i in range(2)]
    for noise, path in zip(noises, files, strict=True):
        np.save(path, noise.numpy()) if suffix == ".npy" else save_file({"noise": noise}, path)
    ref = _reference(pipe, noises[0], guidance)
    ours = _generate(bundle, files[0], tmp_path / "a.png", guidance)
    other = _generate(bundle, files[1], tmp_path / "b.png", guidance)
    print(f"PSNR bundle vs diffusers: {psnr(ours, ref):.1f} dB (other noise: {psnr(other, ref):.1f} dB)")
    assert psnr(ours, ref) >= 40.0 and psnr(other, ref) < 30.0  # the file's noise is the one sampled
    # the prompt's path (the manifest's tokenizer, then encode_text) against the pipeline's encode_prompt
    source = BundleSource(bundle)
    with torch.no_grad():
        for prompt in PROMPTS:
            text, pooled = source._encode(prompt)
            ref_text, _, ref_pooled, _ = pipe.encode_prompt(prompt, None, None, do_classifier_free_guidance=False)
            assert (text - ref_text).abs().max().item() <= 1e-4 and (pooled - ref_pooled).abs().max().item() <= 1e-4
        assert (source._encode("blue dog")[0] - source._encode("a red cat")[0]).abs().max().item() > 1e-2


def test_onnx_bundle_draws_the_diffusers_image(sd3, onnx_bundle, tmp_path):
    _parity(sd3[0], onnx_bundle, tmp_path, 4.0, ".npy")


@pytest.mark.slow
def test_android_bundle_draws_the_diffusers_image(sd3, tmp_path):
    pipe, ck, root = sd3
    bundle = _export(ck, root / "android", "android")
    tok = json.loads((bundle / "manifest.json").read_text())["text_encoder"]["tokenizer"]
    assert tok["kind"] == "concat" and (bundle / tok["parts"][2]["file"]).is_file()
    _parity(pipe, bundle, tmp_path, 4.0, ".safetensors")


BAD_NOISE = {
    "shape": (lambda p: np.save(p, np.zeros((1, 16, 4, 4), np.float32)), ".npy", "shape [1, 16, 4, 4]"),
    "dtype": (lambda p: np.save(p, np.zeros((1, 16, 8, 8), np.float64)), ".npy", "float64"),
    "pickle": (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), ".npy", "not a readable .npy"),
    "two tensors": (
        lambda p: __import__("safetensors.numpy").numpy.save_file(
            {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)}, p
        ),
        ".safetensors",
        "exactly one",
    ),
    "suffix": (lambda p: p.write_text("0"), ".txt", "noise file is a .npy"),
}


@pytest.mark.parametrize("case", list(BAD_NOISE))
def test_bad_noise_file_is_a_named_one_line_error(sd3, onnx_bundle, tmp_path, case):
    make, suffix, words = BAD_NOISE[case]
    path = tmp_path / f"noise{suffix}"
    make(path)
    out = tmp_path / "x.png"
    result = runner.invoke(app, ["generate", str(onnx_bundle), "-p", "a", "--noise", str(path), "-o", str(out)])
    assert result.exit_code == 1 and result.stderr.startswith("error:"), result.output
    assert words in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_noise_file_equals_the_seed_it_was_drawn_from(sd3, tmp_path):
    """The checkpoint source with --noise FILE draws the --seed image when FILE holds the seed's noise."""
    from elasticdit.generation import noise_for

    _, ck, _ = sd3
    path = tmp_path / "seed5.npy"
    np.save(path, noise_for(5, (1, 16, 8, 8)).numpy())
    images = []
    for extra in (["--seed", "5"], ["--noise", str(path)]):
        out = tmp_path / f"{len(images)}.png"
        result = runner.invoke(app, ["generate", str(ck), "-p", "a red cat", "-o", str(out), "--steps", "2", *extra])
        assert result.exit_code == 0, result.output
        images.append(out.read_bytes())
    assert images[0] == images[1]


@pytest.fixture(scope="module")
def multi_bundle(sd3):
    _, ck, root = sd3
    return _export(ck, root / "onnx-multi", "onnx", "--resolution", "64x64", "--resolution", "64x96")


def test_several_resolutions_in_one_bundle(sd3, onnx_bundle, multi_bundle, tmp_path):
    """A method per (point, resolution), weights once, and each resolution's image equal to the pipeline's."""
    from PIL import Image

    from elasticdit.bundle.reader import read_bundle

    pipe, _, _ = sd3
    m = read_bundle(multi_bundle).manifest
    doc = json.loads((multi_bundle / "manifest.json").read_text())
    assert doc["resolution"] == [64, 64] and doc["resolutions"] == [[64, 64], [64, 96]]
    assert [(p["method"], p["resolution"]) for p in doc["operating_points"]] == [
        ("denoise_r1_d3", [64, 64]),
        ("denoise_r1_d3_64x96", [64, 96]),
    ]
    assert (doc["decoder"]["method"], doc["decoder"]["resolution"]) == ("decode", [64, 64])
    assert [(d["method"], d["resolution"]) for d in doc["decoders"]] == [("decode_64x96", [64, 96])]
    assert m.point("r1_d3", (64, 96)).input("latent").shape == [1, 16, 8, 12]
    assert m.decoder_at((64, 96)).outputs[0].shape == [1, 3, 64, 96]
    single = json.loads((onnx_bundle / "manifest.json").read_text())
    assert single["resolutions"] == [[64, 64]] and "decoders" not in single
    sizes = [
        {f["path"]: f["bytes"] for f in json.loads((d / "manifest.json").read_text())["files"]}
        for d in (onnx_bundle, multi_bundle)
    ]
    print(f"weights.bin: one resolution {sizes[0]['weights.bin']} B, two {sizes[1]['weights.bin']} B")
    assert sizes[1]["weights.bin"] <= 1.05 * sizes[0]["weights.bin"]  # weights stored once
    noise = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(13))
    np.save(tmp_path / "wide.npy", noise.numpy())
    ref = pipe(
        "a red cat",
        num_inference_steps=STEPS,
        guidance_scale=4.0,
        latents=noise.clone(),
        output_type="np",
        height=64,
        width=96,
    ).images[0]
    out = tmp_path / "wide.png"
    args = ["generate", str(multi_bundle), "-p", "a red cat", "--noise", str(tmp_path / "wide.npy"), "-o", str(out)]
    result = runner.invoke(app, [*args, "--resolution", "64x96", "--cfg", "4", *SETTINGS])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resolution"] == [64, 96]
    ours = np.asarray(Image.open(out), dtype=np.float64) / 255.0
    print(f"PSNR 64x96 bundle vs diffusers: {psnr(ours, ref):.1f} dB")
    assert ours.shape == (64, 96, 3) and psnr(ours, ref) >= 40.0


def test_a_schedule_runs_at_the_resolution_generated(multi_bundle, tmp_path):
    """A schedule takes each point's method at --resolution (a two-phase schedule of one point is that point's
    image); a point the bundle holds only at another resolution is the named PointResolutionError."""
    noise = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "wide.npy", noise.numpy())
    base = ["generate", "-p", "a red cat", "--noise", str(tmp_path / "wide.npy"), "--resolution", "64x96", *SETTINGS]
    images = []
    for pick in (["--op", "r1_d3"], ["--schedule", "r1_d3:0.5,r1_d3:0.5"]):
        out = tmp_path / f"{len(images)}.png"
        result = runner.invoke(app, [base[0], str(multi_bundle), *base[1:], *pick, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["resolution"] == [64, 96]
        images.append(out.read_bytes())
    assert images[0] == images[1]
    held = tmp_path / "held"  # the same bundle with r1_d3 held only at the default 64x64
    shutil.copytree(multi_bundle, held)
    doc = json.loads((held / "manifest.json").read_text())
    doc["operating_points"] = [p for p in doc["operating_points"] if p["resolution"] == [64, 64]]
    (held / "manifest.json").write_text(json.dumps(doc))
    for pick in (["--schedule", "r1_d3:0.5,r1_d3:0.5"], ["--schedule", "r1_d3"], ["--op", "r1_d3"]):
        out = tmp_path / "x.png"
        result = runner.invoke(app, [base[0], str(held), *base[1:], *pick, "-o", str(out)])
        assert result.exit_code == 1 and not out.exists(), result.output
        assert "holds 'r1_d3' only at 64x64, not at 64x96" in result.stderr, result.stderr
    result = runner.invoke(app, ["generate", str(held), "-p", "a", "--steps", "1", "-o", str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.output  # the default resolution still runs


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["export", "--resolution", "64by96"], "is not HEIGHTxWIDTH"),
        (["export", "--resolution", "64x64", "--resolution", "64x64"], "given twice"),
        (["export", "--resolution", "64x64", "--resolution", "64x100"], "not a multiple"),
        (["generate", "--resolution", "96x96"], "has no methods for 96x96"),
    ],
)
def test_bad_resolutions_are_named_errors(sd3, multi_bundle, tmp_path, args, words):
    _, ck, _ = sd3
    out = tmp_path / "out"
    if args[0] == "export":
        cmd = ["export", str(ck), "--target", "onnx", "-o", str(out), *args[1:]]
    else:
        cmd = ["generate", str(multi_bundle), "-p", "a", "-o", str(out) + ".png", *args[1:]]
    result = runner.invoke(app, cmd)
    assert result.exit_code == 1 and result.stderr.startswith("error:"), result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "out.png").exists()


def test_profile_and_plan_take_the_resolution(multi_bundle, tmp_path):
    """`profile --resolution` measures that resolution's methods (the `_HxW` denoise method, its decoder, its
    peak-memory child) and says so in the report; `plan --resolution` takes a profile of that resolution and
    refuses one of another; without the option both are the default resolution's, as before."""
    base = ["profile", str(multi_bundle), "--runs", "1", "--warmup", "0", "--no-op-breakdown", "--json"]
    reports = {}
    for at in ("64x96", None):
        result = runner.invoke(app, [*base, *(["--resolution", at] if at else []), "--steps", "2"])
        assert result.exit_code == 0, result.output
        reports[at] = json.loads(result.stdout)
    wide, default = reports["64x96"], reports[None]
    assert wide["resolution"] == [64, 96] and default["resolution"] == [64, 64]
    assert [(p["name"], p["method"]) for p in wide["operating_points"]] == [("r1_d3", "denoise_r1_d3_64x96")]
    assert [(p["name"], p["method"]) for p in default["operating_points"]] == [("r1_d3", "denoise_r1_d3")]
    assert (wide["decoder"]["method"], default["decoder"]["method"]) == ("decode_64x96", "decode")
    assert wide["operating_points"][0]["memory"]["methods"] == ["encode_text", "decode_64x96", "denoise_r1_d3_64x96"]
    assert wide["operating_points"][0]["tokens"] > default["operating_points"][0]["tokens"]
    assert wide.keys() == default.keys() and wide["settings"].keys() == default["settings"].keys()

    path = tmp_path / "profile.json"
    path.write_text(json.dumps(wide))
    plan = ["plan", "--profile", str(path), "--budget-ms", "1e9", "--json"]
    result = runner.invoke(app, [*plan, "--resolution", "64x96"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["resolution"] == [64, 96] and doc["choice"]["name"] == "r1_d3"
    assert "resolution" not in json.loads(runner.invoke(app, plan).stdout)  # unchanged without the option
    result = runner.invoke(app, [*plan, "--resolution", "64x64"])  # a profile of another resolution: refused
    assert result.exit_code == 1 and result.stdout == "", result.output
    assert "measured 64x96, not 64x64: profile the bundle with --resolution 64x64" in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--resolution", "96x96"], "the bundle has no methods for 96x96; it has 64x64, 64x96"),
        (["--resolution", "64by96"], "is not HEIGHTxWIDTH"),
        (["--resolution", "64x96", "--ops", "r9_d9"], "no operating point r9_d9 at 64x96; it has r1_d3"),
    ],
)
def test_profile_at_a_resolution_the_bundle_lacks_is_a_named_error(multi_bundle, args, words):
    result = runner.invoke(app, ["profile", str(multi_bundle), "--runs", "1", *args])
    assert result.exit_code == 1 and result.stderr.startswith("error:") and result.stdout == "", result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_remote_runner_takes_the_resolution(multi_bundle, capsys):
    """The ssh transport's board-side runner (`python -m elasticdit.profile.remote --resolution HxW`) measures
    that resolution's methods."""
    from elasticdit.profile import remote

    args = [str(multi_bundle), "--runs", "1", "--warmup", "0", "--no-memory", "--no-op-breakdown"]
    assert remote.main([*args, "--resolution", "64x96"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    measured = [(e["event"], e["method"]) for e in events if e["event"] in ("method", "point")]
    assert measured == [("method", "encode_text"), ("method", "decode_64x96"), ("point", "denoise_r1_d3_64x96")]
    assert remote.main([*args, "--resolution", "96x96"]) == 1
    assert "has no methods for 96x96" in capsys.readouterr().out
