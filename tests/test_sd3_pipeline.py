"""A whole diffusers SD3 / SD3.5 pipeline through convert: token ids, each encoder, the decoders and the whole
image of the PyTorch reference against diffusers on tiny random pipelines built here; LoRA fusion; bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from elasticdit.checkpoint import load_checkpoint
from elasticdit.cli import app
from elasticdit.config import ModelConfig

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from sd3_tiny import PROMPTS, tiny_pipeline, tiny_taesd  # noqa: E402

runner = CliRunner()
STEPS = 3


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    """name -> (pipeline, its save_pretrained folder)."""
    root = tmp_path_factory.mktemp("sd3-pipelines")
    out = {}
    for name, kwargs in {"sd3": {}, "sd35": {"dual_attention": (0, 1), "qk_norm": "rms_norm"}}.items():
        pipe = tiny_pipeline(**kwargs)
        pipe.save_pretrained(root / name)
        out[name] = (pipe, root / name)
    return out


@pytest.fixture(scope="module")
def converted(pipes, tmp_path_factory):
    """(name, t5) -> checkpoint path, converted through the CLI."""
    root = tmp_path_factory.mktemp("sd3-checkpoints")
    out = {}
    for name, (_, folder) in pipes.items():
        for t5 in ("keep", "drop"):
            path = root / f"{name}-{t5}.safetensors"
            result = runner.invoke(app, ["convert", str(folder), "-o", str(path), "--t5", t5, "--json"])
            assert result.exit_code == 0, result.output
            out[name, t5] = path
    return out


def without_t5(pipe):
    return diffusers.StableDiffusion3Pipeline(**{**pipe.components, "text_encoder_3": None, "tokenizer_3": None})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


def test_config_of_a_converted_pipeline(converted):
    ck = load_checkpoint(converted["sd35", "keep"])
    cfg = ck.cfg
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.vae.kind == "autoencoder_kl" and cfg.vae.scaling_factor == 1.5305 and cfg.vae.shift_factor == 0.0609
    assert cfg.transformer.dual_attention_layers == (0, 1) and cfg.resolution == (64, 64)
    assert cfg.scheduler.kind == "flow_match_euler" and cfg.scheduler.shift == 3.0
    assert cfg.text_encoders.t5 is not None and cfg.text_encoders.t5_len == 256
    assert set(ck.files) == {"tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer_2/vocab.json"} | {
        "tokenizer_2/merges.txt",
        "tokenizer_3/tokenizer.json",
    }
    assert load_checkpoint(converted["sd35", "drop"]).cfg.text_encoders.t5 is None
    result = runner.invoke(app, ["inspect", str(converted["sd35", "keep"]), "--json"])
    assert result.exit_code == 0, result.output


def test_token_ids_equal_the_pipeline_tokenizers(pipes, converted):
    pipe, _ = pipes["sd35"]
    encoders = load_checkpoint(converted["sd35", "keep"]).models().text_encoder
    for prompt in PROMPTS:
        ids = encoders.tokenize(prompt)[0].tolist()
        kwargs = {"padding": "max_length", "truncation": True}
        assert ids[:77] == pipe.tokenizer(prompt, max_length=77, **kwargs).input_ids
        assert ids[77:154] == pipe.tokenizer_2(prompt, max_length=77, **kwargs).input_ids
        assert ids[154:] == pipe.tokenizer_3(prompt, max_length=256, **kwargs).input_ids
    assert encoders.tokenize("a red cat")[0, :77].tolist() != encoders.tokenize("a red dog")[0, :77].tolist()


@pytest.mark.parametrize("t5", ["keep", "drop"])
def test_encoders_match_transformers(pipes, converted, t5):
    pipe, _ = pipes["sd35"]
    models = load_checkpoint(converted["sd35", t5]).models()
    enc = models.text_encoder
    reference = pipe if t5 == "keep" else without_t5(pipe)
    worst = {}
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = enc.tokenize(prompt)
            for name, ours, theirs, part in (("clip_l", enc.clip_l, pipe.text_encoder, ids[:, :77]),):
                out = theirs(part, output_hidden_states=True)
                hidden, pooled = ours(part)
                worst[name] = max(
                    (hidden - out.hidden_states[-2]).abs().max().item(), (pooled - out[0]).abs().max().item()
                )
            out = pipe.text_encoder_2(ids[:, 77:154], output_hidden_states=True)
            hidden, pooled = enc.clip_g(ids[:, 77:154])
            worst["clip_g"] = max(
                (hidden - out.hidden_states[-2]).abs().max().item(), (pooled - out[0]).abs().max().item()
            )
            if t5 == "keep":
                worst["t5"] = (enc.t5(ids[:, 154:]) - pipe.text_encoder_3(ids[:, 154:])[0]).abs().max().item()
            text, pooled = models.encode_prompt(prompt)
            ref_text, _, ref_pooled, _ = reference.encode_prompt(prompt, None, None, do_classifier_free_guidance=False)
            assert (text - ref_text).abs().max().item() <= 1e-5 and (pooled - ref_pooled).abs().max().item() <= 1e-5
    assert all(v <= 1e-5 for v in worst.values()), worst


def test_decoders_match_diffusers(pipes, converted, tmp_path):
    pipe, folder = pipes["sd3"]
    z = torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = load_checkpoint(converted["sd3", "drop"]).models().vae.decode(z)
        ref = (pipe.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)
        assert ours.shape == (2, 3, 64, 96) and (ours - ref).abs().max().item() <= 1e-5
        tiny = tiny_taesd()
        tiny.save_pretrained(tmp_path / "taesd3")
        out = tmp_path / "tiny.safetensors"
        result = runner.invoke(
            app, ["convert", str(folder), "-o", str(out), "--decoder", "taesd3", str(tmp_path / "taesd3")]
        )
        assert result.exit_code == 0, result.output
        ck = load_checkpoint(out)
        assert ck.cfg.vae.kind == "autoencoder_tiny" and not any(k.startswith("vae.encoder") for k in ck.tensors)
        tiny_ours = ck.models().vae.decode(z)
        tiny_ref = (tiny.decode(z).sample / 2 + 0.5).clamp(0, 1)
        assert (tiny_ours - tiny_ref).abs().max().item() <= 1e-5
        assert (tiny_ours - ours).abs().max().item() > 0.05  # a different decoder draws differently


@pytest.mark.parametrize(
    ("name", "t5", "guidance", "negative"),
    [
        ("sd3", "drop", 1.0, None),
        ("sd3", "keep", 4.0, "blue dog"),
        ("sd35", "keep", 1.0, None),
        ("sd35", "drop", 4.0, ""),
    ],
)
def test_whole_image_matches_the_diffusers_pipeline(pipes, converted, name, t5, guidance, negative):
    from elasticdit.generation import CheckpointSource

    pipe, _ = pipes[name]
    reference = pipe if t5 == "keep" else without_t5(pipe)
    source = CheckpointSource(converted[name, t5])
    noise = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = reference(
        "a red cat",
        negative_prompt=negative,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        latents=noise.clone(),
        output_type="np",
        height=64,
        width=64,
    ).images[0]
    ours = source.denoise(
        ["a red cat"], noise.clone(), source.default_point, STEPS, guidance, negative_prompt=negative or ""
    )
    ours = ours[0].permute(1, 2, 0).numpy()
    assert psnr(ours, ref) >= 40.0
    other = source.denoise(["x"], noise.clone(), source.default_point, STEPS, guidance)[0].permute(1, 2, 0).numpy()
    assert psnr(other, ref) < psnr(ours, ref) - 20  # another prompt is measurably another image


@pytest.mark.parametrize("metadata", [True, False], ids=["alpha-in-metadata", "diffusers-default-alpha"])
def test_lora_fusion_matches_diffusers(pipes, tmp_path, metadata):
    """Transformer and CLIP-L adapters, fused at scale 0.7, against load_lora_weights + fuse_lora."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    _, folder = pipes["sd35"]
    fresh = diffusers.StableDiffusion3Pipeline.from_pretrained(folder)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_v", "attn2.to_k", "ff.net.2"])
    text_config = LoraConfig(r=2, lora_alpha=3, target_modules=["q_proj", "fc1"])
    fresh.transformer.add_adapter(config)
    inject_adapter_in_model(text_config, fresh.text_encoder)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for module in (fresh.transformer, fresh.text_encoder):
            for n, p in module.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    extra = {}
    if metadata:
        extra = {
            "transformer_lora_adapter_metadata": config.to_dict(),
            "text_encoder_lora_adapter_metadata": text_config.to_dict(),
        }
    diffusers.StableDiffusion3Pipeline.save_lora_weights(
        tmp_path,
        transformer_lora_layers=get_peft_model_state_dict(fresh.transformer),
        text_encoder_lora_layers=get_peft_model_state_dict(fresh.text_encoder),
        **extra,
    )
    lora = tmp_path / "pytorch_lora_weights.safetensors"
    reference = diffusers.StableDiffusion3Pipeline.from_pretrained(folder)
    reference.load_lora_weights(lora)
    reference.fuse_lora(lora_scale=0.7)
    ours = load_checkpoint(_convert(folder, tmp_path / "fused.safetensors", "--lora", f"{lora}:0.7")).tensors
    base = load_checkpoint(_convert(folder, tmp_path / "plain.safetensors")).tensors
    fused = {}
    for prefix, module in (("transformer.", reference.transformer), ("text_encoder.clip_l.", reference.text_encoder)):
        for k, v in module.state_dict().items():
            if "lora_" not in k:
                fused[prefix + k.replace(".base_layer", "")] = v
    changed = [k for k in ours if not torch.equal(ours[k], base[k])]
    targets = ("to_q", "to_v", "attn2.to_k", "ff.net.2", "q_proj", "fc1")
    assert any(k.startswith("text_encoder.clip_l.") for k in changed)
    assert changed and all(any(t in k for t in targets) for k in changed)
    assert max((ours[k] - fused[k]).abs().max().item() for k in changed) <= 1e-5


def _convert(folder, out, *extra):
    result = runner.invoke(app, ["convert", str(folder), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


def test_lora_naming_a_missing_module_is_refused(pipes, tmp_path):
    from safetensors.torch import save_file

    _, folder = pipes["sd3"]
    lora = tmp_path / "bad.safetensors"
    save_file(
        {
            "transformer.transformer_blocks.0.attn2.to_q.lora_A.weight": torch.zeros(2, 32),
            "transformer.transformer_blocks.0.attn2.to_q.lora_B.weight": torch.zeros(32, 2),
        },
        lora,
    )
    out = tmp_path / "x.safetensors"
    result = runner.invoke(app, ["convert", str(folder), "-o", str(out), "--lora", str(lora)])
    assert result.exit_code == 1 and "does not have" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def _edit_json(path, **changes):
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, **changes}))


BAD_INPUTS = {
    "missing component": (lambda d: shutil.rmtree(d / "text_encoder_2"), "text_encoder_2"),
    "unknown class": (
        lambda d: _edit_json(d / "model_index.json", vae=["diffusers", "AutoencoderKLWan"]),
        "AutoencoderKLWan",
    ),
    "mismatched widths": (lambda d: _edit_json(d / "text_encoder_2" / "config.json", projection_dim=8), "pooled_dim"),
    "pickle weights": (
        lambda d: (d / "vae" / "diffusion_pytorch_model.safetensors").rename(d / "vae" / "diffusion_pytorch_model.bin"),
        "only safetensors",
    ),
    "missing shard": (
        lambda d: (
            (d / "vae" / "diffusion_pytorch_model.safetensors").unlink(),
            (d / "vae" / "diffusion_pytorch_model.safetensors.index.json").write_text(
                json.dumps({"weight_map": {"decoder.conv_in.weight": "model-00001-of-00002.safetensors"}})
            ),
        ),
        "missing",
    ),
    "dynamic shifting": (
        lambda d: _edit_json(d / "scheduler" / "scheduler_config.json", use_dynamic_shifting=True),
        "use_dynamic_shifting",
    ),
    "t5 kept but absent": (lambda d: _edit_json(d / "model_index.json", text_encoder_3=[None, None]), "text_encoder_3"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_pipeline_is_a_named_one_line_error(pipes, tmp_path, case):
    _, folder = pipes["sd3"]
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    damage, words = BAD_INPUTS[case]
    damage(broken)
    out = tmp_path / "x.safetensors"
    result = runner.invoke(app, ["convert", str(broken), "-o", str(out), "--t5", "keep"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_stored_tokenizer_files_are_required_and_old_configs_are_unchanged(converted, tmp_path):
    from configs import tiny_config

    from elasticdit.checkpoint import save_checkpoint
    from elasticdit.demo.config import demo_config
    from elasticdit.errors import MissingFilesError

    ck = load_checkpoint(converted["sd3", "drop"])
    files = {k: v for k, v in ck.files.items() if k != "tokenizer_2/merges.txt"}
    with pytest.raises(MissingFilesError, match="tokenizer_2/merges.txt"):
        save_checkpoint(tmp_path / "x.safetensors", ck.cfg, ck.tensors, files)
    assert not (tmp_path / "x.safetensors").exists()
    save_checkpoint(tmp_path / "y.safetensors", ck.cfg, ck.tensors, ck.files)
    assert load_checkpoint(tmp_path / "y.safetensors").files == ck.files
    for cfg in (demo_config(), tiny_config()):
        text = cfg.to_json()
        assert not any(k in text for k in ("dual_attention_layers", "text_encoders", "num_train_timesteps"))
    from safetensors import safe_open

    from elasticdit.config import METADATA_KEY
    from elasticdit.demo_checkpoint import demo_checkpoint_path

    with safe_open(demo_checkpoint_path(), framework="pt") as f:
        stored = f.metadata()[METADATA_KEY]
    assert load_checkpoint(demo_checkpoint_path()).cfg.to_json() == stored  # the shipped demo serialises as before


@pytest.mark.slow
def test_converted_pipeline_exports_to_ios_and_verifies(converted, tmp_path):
    """A converted SD3 pipeline (CLIP-L, CLIP-G, T5 kept) exports to a Core ML bundle with every method
    (encode_text, denoise, decode) and `verify` passes on it: the converted graphs rebuilt and run with the
    package's weights under Core ML's numerics (predictions need macOS). Before `lowering.drop_aliases` the CLIP
    encoders' no-op slices of their causal-bias buffer failed the conversion (`aten.alias`)."""
    ck = converted["sd3", "keep"]
    out = tmp_path / "ios"
    result = runner.invoke(app, ["export", str(ck), "--target", "ios", "--recipe", "ios-fp32", "-o", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["verify", str(out), "--checkpoint", str(ck), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["method"] for m in report["methods"]] == ["denoise_r1_d3", "decode", "encode_text"]
    assert report["passed"] and all(m["passed"] and m["value"] <= m["limit"] for m in report["methods"])
