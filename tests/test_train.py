"""Demo training on a tiny config: losses fall, the checkpoint loads, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from configs import tiny_config

from elasticdit.checkpoint import load_checkpoint
from elasticdit.demo.config import demo_config
from elasticdit.demo.initialization import init_vae_haar, init_weights
from elasticdit.demo.plan import TrainPlan
from elasticdit.demo.steps import random_picks, training_net
from elasticdit.demo.train import main, parse_category_weights
from elasticdit.demo.trainer import CHECKPOINT_FILE, LATENTS_FILE, LOG_FILE, STATE_FILE, Trainer, train
from elasticdit.model.layers import LayerNorm, fused_kernels, gelu_tanh
from elasticdit.model.pipeline import build_models
from elasticdit.model.sampler import training_pair
from elasticdit.model.text_encoder import tokenize
from elasticdit.operating_points import full_point, lightest_point, operating_points

CFG = tiny_config(text_encoder=True)
PLAN = TrainPlan(
    minutes=None,
    vae_steps=12,
    dit_steps=12,
    scenes=48,
    vae_batch=8,
    vae_lr=1e-3,
    dit_batch=8,
    dit_lr=2e-3,
    warmup=2,
    save_every=4,
    log_every=1,
    dtype="float32",
)


@pytest.mark.parametrize("cfg", [demo_config(), CFG], ids=["demo-f4", "tiny-f8"])
def test_vae_starts_as_a_block_mean_codec(cfg):
    """Before training, latent channels 0-2 hold the R, G, B block means (+1) and the decoder paints them back."""
    models = build_models(cfg)
    init_vae_haar(models.vae)
    f = cfg.vae.downsample
    image = torch.rand(2, 3, 4 * f, 4 * f)
    with torch.no_grad():
        latent = models.vae.encode(image)
        means = F.avg_pool2d(image * 2 - 1, f)
        torch.testing.assert_close(latent[:, :3], means + 1, atol=1e-5, rtol=0)
        latent[:, 3:] = 0  # the detail channels (if any) start random
        decoded = models.vae.decode(latent)
    torch.testing.assert_close(decoded, F.interpolate(means * 0.5 + 0.5, scale_factor=f), atol=1e-5, rtol=0)


class Crash(Exception):
    pass


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


@pytest.mark.slow
def test_losses_fall_and_checkpoint_loads(tmp_path):
    probe = Trainer(tmp_path / "probe", CFG, PLAN, seed=3, log=lambda s: None)
    images = probe.images()[:8].float() / 255.0
    with torch.no_grad():
        before_vae = F.mse_loss(probe.models.vae.decode(probe.models.vae.encode(images)), images).item()

    path = train(tmp_path / "run", CFG, PLAN, seed=3, log=lambda s: None)
    ck = load_checkpoint(path)
    models, vae_cfg = ck.models(), ck.cfg.vae
    assert vae_cfg.scaling_factor != 1.0 and vae_cfg.shift_factor != 0.0  # chosen from the latents' statistics
    with torch.no_grad():
        after_vae = F.mse_loss(models.vae.decode(models.vae.encode(images)), images).item()
    assert after_vae < 0.95 * before_vae  # from the Haar init (8x8 block means), already a fair codec

    # the rectified-flow loss of the full operating point on real latents and prompts, fixed noise and sigmas
    x0 = models.vae.scale(torch.load(tmp_path / "run" / "latents.pt", weights_only=True)["latents"][:8])
    tokens = probe.prompt_tokens()[:8]
    g = torch.Generator().manual_seed(1)
    noise, sigma = torch.randn(x0.shape, generator=g), torch.rand(8, generator=g)
    xt, target = training_pair(x0, noise, sigma)

    def dit_loss(m) -> float:
        with torch.no_grad():
            text, pooled = m.text_encoder(tokens)
            return F.mse_loss(m.transformer(xt, sigma, text, pooled, full_point(CFG)), target).item()

    assert dit_loss(models) < 0.9 * dit_loss(probe.models)  # adaLN-Zero start: velocity 0
    log = records(tmp_path / "run")
    dit = [r["loss"] for r in log if r["phase"] == "dit" and "loss" in r]
    assert len(dit) == PLAN.dit_steps and sum(dit[-4:]) < sum(dit[:4])
    assert next(r for r in log if "encoded" in r)["encoded"] == PLAN.scenes


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """PLAN trained without interruption (seed 5): the checkpoint, its run folder beside it (read only)."""
    return train(tmp_path_factory.mktemp("straight") / "a", CFG, PLAN, seed=5, log=lambda s: None)


@pytest.mark.slow
@pytest.mark.parametrize("phase, step", [("vae", 6), ("dit", 7)])
def test_resume_equals_an_uninterrupted_run(straight, tmp_path, phase, step):
    def crash_at(line: str) -> None:
        if f"phase={phase} step={step} " in line:
            raise Crash

    with pytest.raises(Crash):
        train(tmp_path / "b", CFG, PLAN, seed=5, log=crash_at)
    state = torch.load(tmp_path / "b" / STATE_FILE, weights_only=True)
    assert (state["phase"], state["step"]) == (phase, 4)  # the last periodic save
    with pytest.raises(FileExistsError, match="--resume"):
        train(tmp_path / "b", CFG, PLAN, seed=5, log=lambda s: None)
    resumed = train(tmp_path / "b", CFG, PLAN, seed=5, resume=True, log=lambda s: None)
    assert resumed.read_bytes() == straight.read_bytes()
    a = torch.load(straight.parent / STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "b" / STATE_FILE, weights_only=True)
    for key in ("models", "ema"):
        left, right = a[key], b[key]
        pairs = (
            zip(left.values(), right.values(), strict=True) if isinstance(left, dict) else zip(left, right, strict=True)
        )
        assert all(torch.equal(x, y) for x, y in pairs)
    assert records(tmp_path / "b")[-2]["step"] == PLAN.dit_steps


# One short run (the VAE phase) whose plan sets every field a resume must match away from its default: each
# refusal test below resumes a copy of it with one thing changed (the run is trained once, not once per test).
RUN_PLAN = dataclasses.replace(
    PLAN,
    vae_steps=4,
    dit_steps=0,
    category_weights={"position": 2},
    layout="free",
    uncovered_weight=3.0,
    sandwich="ratio-lightest",
    distill=0.5,
)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("short") / "run"
    train(out, CFG, RUN_PLAN, seed=1, log=lambda s: None)
    return out


@pytest.fixture
def run(short_run, tmp_path) -> Path:
    """A copy of the short run (seed 1, RUN_PLAN) to resume or edit."""
    return Path(shutil.copytree(short_run, tmp_path / "run"))


def test_resume_refuses_another_seed(run):
    train(run, CFG, RUN_PLAN, seed=1, resume=True, log=lambda s: None)  # the same plan and seed resume
    with pytest.raises(ValueError, match="another config or seed"):
        train(run, CFG, RUN_PLAN, seed=2, resume=True, log=lambda s: None)


@pytest.mark.slow
@pytest.mark.parametrize("sandwich", ["three", "ratios", "ratio-lightest"])
def test_sandwich_trains_full_lightest_and_for_ratios_every_middle_ratio(tmp_path, sandwich):
    cfg = dataclasses.replace(CFG, elastic=dataclasses.replace(CFG.elastic, compression_ratios=(1, 2, 4)))
    plan = dataclasses.replace(PLAN, vae_steps=2, dit_steps=8, sandwich=sandwich)
    train(tmp_path / sandwich, cfg, plan, seed=2, log=lambda s: None)
    steps = [{k[5:] for k in r if k.startswith("loss_")} for r in records(tmp_path / sandwich) if r["phase"] == "dit"]
    steps = [names for names in steps if names]
    assert len(steps) == plan.dit_steps
    assert all({"r1_d4", "r4_d2"} <= names for names in steps)  # the full and the lightest point, every step
    middle = [sum(name.startswith("r2_") for name in names) for names in steps]
    if sandwich == "ratios":
        assert all(len(names) == 4 for names in steps) and middle == [1] * len(steps)
    elif sandwich == "ratio-lightest":  # ratio 2's lightest every step, and the random pick one of the rest
        assert all(len(names) == 4 and "r2_d2" in names for names in steps)
    else:
        assert all(len(names) == 3 for names in steps) and max(middle) <= 1


@pytest.mark.slow
def test_late_sandwich_takes_over_from_late_from(tmp_path):
    cfg = dataclasses.replace(CFG, elastic=dataclasses.replace(CFG.elastic, compression_ratios=(1, 2, 4)))
    plan = dataclasses.replace(
        PLAN, vae_steps=2, dit_steps=8, late_sandwich="ratio-lightest", late_from=0.5, late_pick_weights={"r2_d4": 2.0}
    )
    train(tmp_path / "late", cfg, plan, seed=2, log=lambda s: None)
    steps = [{k[5:] for k in r if k.startswith("loss_")} for r in records(tmp_path / "late") if r["phase"] == "dit"]
    steps = [names for names in steps if names]
    assert [len(names) for names in steps] == [3] * 4 + [4] * 4  # progress 4/8 on: ratio 2's lightest joins
    assert all("r2_d2" in names for names in steps[4:])
    with pytest.raises(ValueError, match="no random pick can land on r2_d2"):
        Trainer(tmp_path / "x", cfg, dataclasses.replace(plan, late_pick_weights={"r2_d2": 2.0}), 0, lambda s: None)


def test_plan_refuses_a_bad_late_stage():
    with pytest.raises(ValueError, match="unknown sandwich 'five'"):
        TrainPlan(late_sandwich="five")
    with pytest.raises(ValueError, match="late_from must be between 0 and 1, got 1.0"):
        TrainPlan(late_sandwich="ratios", late_from=1.0)
    with pytest.raises(ValueError, match="late pick weights need a late sandwich"):
        TrainPlan(late_pick_weights={"r1_d3": 2.0})
    with pytest.raises(ValueError, match="the pick weight of r1_d3 must be positive"):
        TrainPlan(late_sandwich="ratios", late_pick_weights={"r1_d3": 0.0})


def test_plan_refuses_unknown_layout_and_sandwich():
    with pytest.raises(ValueError, match="unknown layout 'grid'"):
        TrainPlan(layout="grid")
    with pytest.raises(ValueError, match="unknown sandwich 'five'"):
        TrainPlan(sandwich="five")


def test_plan_refuses_bad_category_weights_and_pick_weight():
    with pytest.raises(ValueError, match="unknown category 'shade'"):
        TrainPlan(category_weights={"shade": 2})
    with pytest.raises(ValueError, match="uncovered_weight must be positive, got 0"):
        TrainPlan(uncovered_weight=0.0)
    assert parse_category_weights(["position=2", "counting = 3"]) == {"position": 2, "counting": 3}
    for bad in ("position", "position=two", "position=-1"):
        with pytest.raises(ValueError, match="CATEGORY=N with a positive integer N"):
            parse_category_weights([bad])


def test_token_embedding_std_sets_the_text_encoders_starting_scale():
    default, small = build_models(CFG), build_models(CFG)
    init_weights(default, seed=0)
    init_weights(small, seed=0, token_std=0.02)
    assert default.text_encoder.token_embedding.weight.std() > 0.5  # PyTorch's N(0, 1)
    assert abs(small.text_encoder.token_embedding.weight.detach().std().item() - 0.02) < 0.004
    position = small.text_encoder.position_embedding
    assert torch.equal(default.text_encoder.position_embedding, position), "the other draws are unchanged"
    with pytest.raises(ValueError, match="token_embedding_std must be positive, got 0"):
        TrainPlan(token_embedding_std=0.0)


def test_uncovered_weight_steers_the_random_pick_to_the_middle_ratio(tmp_path):
    cfg = dataclasses.replace(CFG, elastic=dataclasses.replace(CFG.elastic, compression_ratios=(1, 2, 4)))
    points = operating_points(cfg)
    others = [q for q in points if q not in (full_point(cfg), lightest_point(cfg))]
    middle = sum(q.ratio == 2 for q in others) / len(others)

    def share(weight: float) -> float:
        trainer = Trainer(tmp_path, cfg, dataclasses.replace(PLAN, uncovered_weight=weight), 0, lambda s: None)
        weights = torch.tensor([weight if q.ratio == 2 else 1.0 for q in others])
        return sum(trainer.pick(others, weights).ratio == 2 for _ in range(2000)) / 2000

    assert abs(share(1.0) - middle) < 0.05  # uniform
    weighted = 3 * middle / (3 * middle + (1 - middle))
    assert abs(share(3.0) - weighted) < 0.05


def test_pick_weights_replace_the_rule_for_the_named_points():
    cfg = dataclasses.replace(CFG, elastic=dataclasses.replace(CFG.elastic, compression_ratios=(1, 2, 4)))
    plan = dataclasses.replace(PLAN, uncovered_weight=3.0, pick_weights={})
    _, others, rule = random_picks(cfg, plan)
    named = others[0].name
    _, same, weights = random_picks(cfg, dataclasses.replace(plan, pick_weights={named: 5.0}))
    assert same == others
    expected = [5.0 if q.name == named else (3.0 if q.ratio == 2 else 1.0) for q in others]
    assert rule.tolist() == [3.0 if q.ratio == 2 else 1.0 for q in others] and weights.tolist() == expected


def test_resume_and_latents_refuse_other_category_weights(run):
    other = dataclasses.replace(RUN_PLAN, category_weights={})
    with pytest.raises(ValueError, match=r"trained with category_weights \{'position': 2\}; not resuming"):
        train(run, CFG, other, seed=1, resume=True, log=lambda s: None)
    with pytest.raises(ValueError, match="belongs to another run"):
        Trainer(run, CFG, other, seed=1, log=lambda s: None).load_latents()


def test_resume_refuses_another_layout(run):
    with pytest.raises(ValueError, match="trained with layout 'free'; not resuming"):
        train(run, CFG, dataclasses.replace(RUN_PLAN, layout="slots"), seed=1, resume=True, log=lambda s: None)
    trainer = Trainer(run, CFG, dataclasses.replace(RUN_PLAN, layout="slots"), seed=1, log=lambda s: None)
    with pytest.raises(ValueError, match="belongs to another run"):
        trainer.load_latents()  # the cached latents are of the free-layout scenes


def test_resume_refuses_another_pick_weight(run):
    uniform = dataclasses.replace(RUN_PLAN, uncovered_weight=1.0)
    with pytest.raises(ValueError, match="trained with uncovered_weight 3.0; not resuming"):
        train(run, CFG, uniform, seed=1, resume=True, log=lambda s: None)


def test_a_run_saved_by_an_older_trainer_is_refused(run):
    """Runs saved before a plan field existed are not guessed at: resuming one is a clear error."""
    train(run, CFG, RUN_PLAN, seed=1, resume=True, log=lambda s: None)  # a current state resumes
    state = torch.load(run / STATE_FILE, weights_only=True)
    del state["plan"]["late_sandwich"], state["plan"]["sandwich"]  # as saved before the curriculum existed
    torch.save(state, run / STATE_FILE)
    with pytest.raises(ValueError, match=r"saved by an older trainer \(no sandwich, late_sandwich\); it cannot be"):
        train(run, CFG, RUN_PLAN, seed=1, resume=True, log=lambda s: None)
    latents = torch.load(run / LATENTS_FILE, weights_only=True)
    del latents["layout"]
    torch.save(latents, run / LATENTS_FILE)
    trainer = Trainer(run, CFG, RUN_PLAN, seed=1, log=lambda s: None)
    with pytest.raises(ValueError, match=r"latents.pt was saved by an older trainer \(no layout\)"):
        trainer.load_latents()


def test_resume_refuses_another_sandwich(run):
    three = dataclasses.replace(RUN_PLAN, sandwich="three")
    with pytest.raises(ValueError, match="trained with sandwich 'ratio-lightest'; not resuming"):
        train(run, CFG, three, seed=1, resume=True, log=lambda s: None)
    late = dataclasses.replace(RUN_PLAN, late_sandwich="ratios")
    with pytest.raises(ValueError, match="trained with late_sandwich None; not resuming"):
        train(run, CFG, late, seed=1, resume=True, log=lambda s: None)


def test_command_line_writes_a_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("elasticdit.demo.config.demo_config", lambda: CFG)
    assert main(["--out", str(tmp_path / "cli"), "--steps", "2", "2", "--scenes", "16", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "encoded=16 " in out and f"wrote {tmp_path / 'cli' / CHECKPOINT_FILE}" in out
    assert load_checkpoint(tmp_path / "cli" / CHECKPOINT_FILE).cfg.transformer == CFG.transformer


@pytest.mark.parametrize(
    "args, message",
    [
        (["--category-weight", "colour=2"], "unknown category 'colour'"),
        (["--category-weight", "position=two"], "CATEGORY=N with a positive integer N"),
        (["--uncovered-weight", "0"], "uncovered_weight must be positive, got 0.0"),
        (["--token-embedding-std", "-1"], "token_embedding_std must be positive, got -1.0"),
        (["--distill", "-0.1"], "distill must be in [0, 1], got -0.1"),
        (["--pick-weight", "r1_d3"], "POINT=W with a number W, got 'r1_d3'"),
        (["--pick-weight", "r1_d3=x"], "POINT=W with a number W, got 'r1_d3=x'"),
        (["--pick-weight", "r1_d3=0"], "the pick weight of r1_d3 must be positive and finite, got 0.0"),
        (["--pick-weight", "r1_d3=inf"], "the pick weight of r1_d3 must be positive and finite, got inf"),
    ],
)
def test_command_line_refuses_bad_plan_values(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "bad"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_command_line_refuses_a_pick_weight_no_pick_can_take(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("elasticdit.demo.config.demo_config", lambda: CFG)
    full = full_point(CFG).name
    assert main(["--out", str(tmp_path / "bad"), "--pick-weight", f"{full}=2", "--pick-weight", "r9_d9=2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: no random pick can land on {', '.join(sorted([full, 'r9_d9']))}; pick weights")
    assert err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def script_on_tiny_config(monkeypatch, name: str):
    """scripts/NAME.py as a module, with the tiny config in place of the demo's."""
    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "demo_config", lambda: CFG)
    return module


@pytest.mark.slow
def test_continue_script_trains_a_finished_run_on(tmp_path, monkeypatch, capsys):
    script = script_on_tiny_config(monkeypatch, "continue_demo_training")
    plan = dataclasses.replace(PLAN, dit_steps=4)
    train(tmp_path / "run", CFG, plan, seed=3, log=lambda s: None)
    before = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    assert script.main([str(tmp_path / "run"), "--steps", "4", "--every", "2", "--seed", "3"]) == 0
    for step in (2, 4):
        after = load_checkpoint(tmp_path / "run" / f"extra{step}.safetensors")
        assert after.cfg == before.cfg
    weights = before.models().transformer.state_dict()
    moved = after.models().transformer.state_dict()
    assert any(not torch.equal(weights[k], moved[k]) for k in weights)  # it trained on


def test_continue_script_trains_only_the_named_points_at_the_given_rate(tmp_path, monkeypatch, capsys):
    script = script_on_tiny_config(monkeypatch, "continue_demo_training")
    train(tmp_path / "run", CFG, dataclasses.replace(PLAN, dit_steps=2), seed=3, log=lambda s: None)
    before = len(records(tmp_path / "run"))
    light = lightest_point(CFG).name
    args = [str(tmp_path / "run"), "--steps", "4", "--every", "2", "--seed", "3", "--points", light, "--lr", "1e-4"]
    assert script.main(args) == 0
    steps = [r for r in records(tmp_path / "run")[before:] if r["phase"] == "dit" and "loss" in r]
    assert steps and all({k for k in r if k.startswith("loss_")} == {f"loss_{light}"} for r in steps)
    assert all(0 < r["lr"] <= 1e-4 for r in steps)
    assert script.main([str(tmp_path / "run"), "--points", "r9_d9"]) == 1
    assert capsys.readouterr().err.startswith("error: unknown operating point 'r9_d9'")


def test_continue_script_refuses_what_it_cannot_continue(tmp_path, monkeypatch, capsys):
    script = script_on_tiny_config(monkeypatch, "continue_demo_training")
    assert script.main([str(tmp_path / "empty")]) == 1
    assert "state.pt not found: not a training run directory" in capsys.readouterr().err
    Trainer(tmp_path / "started", CFG, PLAN, seed=0, log=lambda s: None).save_state()  # phase "vae"
    assert script.main([str(tmp_path / "started")]) == 1
    assert "has not finished training (phase vae); resume it instead" in capsys.readouterr().err


def test_variant_script_trains_the_named_design(tmp_path, monkeypatch, capsys):
    script = script_on_tiny_config(monkeypatch, "train_demo_variant")
    args = ["--out", str(tmp_path / "v"), "--latent-channels", "3", "--patch", "1", "--steps", "2", "2"]
    assert script.main([*args, "--scenes", "16"]) == 0
    cfg = load_checkpoint(tmp_path / "v" / CHECKPOINT_FILE).cfg
    assert (cfg.vae.latent_channels, cfg.transformer.in_channels, cfg.transformer.patch_size) == (3, 3, 1)
    assert cfg.ssba == CFG.ssba and cfg.elastic == CFG.elastic
    assert script.main(["--out", str(tmp_path / "bad"), "--patch", "3"]) == 1  # 128 px / f8 = 16 cells: no patch 3
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
@pytest.mark.parametrize("distill", [1.0, 0.5])
def test_distilled_points_learn_the_full_points_prediction(distill, tmp_path):
    """The other points share the full point's noise and timesteps and aim at the lerp of the data's velocity and
    the full point's detached prediction: a copy of the full network has loss (1 - distill)^2 x the full point's."""
    plan = dataclasses.replace(PLAN, distill=distill)
    trainer = Trainer(tmp_path, CFG, plan, 0, lambda s: None)
    full = training_net(trainer.models, full_point(CFG))
    with torch.no_grad():
        for p in full.parameters():
            p.normal_(std=0.05)  # the zeroed output projection would predict 0 for everything
    x0 = torch.randn(4, CFG.transformer.in_channels, *CFG.latent_size())
    tokens = tokenize("two red circles", CFG.text_encoder.vocab, CFG.transformer.text_len)
    text, pooled = trainer.models.text_encoder(torch.tensor([tokens] * 4))
    lightest = training_net(trainer.models, lightest_point(CFG))
    own, copy, light = trainer.sandwich_losses([full, full, lightest], x0, text, pooled)
    torch.testing.assert_close(copy, (1 - distill) ** 2 * own)
    assert light > 0
    # the full point's prediction is a detached target: the copy's gradient is (1 - distill) x the own loss's
    # (through the target too it would be (1 - distill)^2 x)
    weight = full.proj_out.weight
    (g_own,) = torch.autograd.grad(own, weight, retain_graph=True)
    (g_copy,) = torch.autograd.grad(copy, weight, retain_graph=True)
    torch.testing.assert_close(g_copy, (1 - distill) * g_own)
    separate = Trainer(tmp_path, CFG, PLAN, 0, lambda s: None)
    own, copy, _ = separate.sandwich_losses([full, full, lightest], x0, text, pooled)
    assert not torch.isclose(own, copy), "without distillation every point draws its own noise"


def test_plan_refuses_a_distill_weight_outside_0_1():
    with pytest.raises(ValueError, match=r"distill must be in \[0, 1\], got 1.5"):
        TrainPlan(distill=1.5)


def test_resume_refuses_another_distill_weight(run):
    with pytest.raises(ValueError, match="trained with distill 0.5; not resuming"):
        train(run, CFG, dataclasses.replace(RUN_PLAN, distill=0.0), seed=1, resume=True, log=lambda s: None)


def test_fused_kernels_give_the_exported_formulations_outputs_and_gradients():
    """Training runs LayerNorm and GELU as PyTorch's fused kernels; the exported graphs spell them out. Both are
    the same maths: the full point's and the text encoder's outputs and every gradient agree to float rounding."""
    models = build_models(CFG)
    params = [*models.transformer.parameters(), *models.text_encoder.parameters()]
    torch.manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.normal_(std=0.2)  # adaLN-Zero's zeros would hide the norms behind zero modulation
    net = training_net(models, full_point(CFG))
    x = torch.randn(3, CFG.transformer.in_channels, *CFG.latent_size())
    tokens = torch.tensor([tokenize("a red circle", CFG.text_encoder.vocab, CFG.transformer.text_len)] * 3)
    sigma = torch.tensor([0.2, 0.5, 0.9])

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = net(x, sigma, *models.text_encoder(tokens))
        grads = torch.autograd.grad(out.square().mean(), params, allow_unused=True)
        return out, [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]

    spelled_out, spelled_grads = run()
    with fused_kernels():
        fused, fused_grads = run()
    torch.testing.assert_close(fused, spelled_out, rtol=1e-4, atol=1e-5)
    for f, s in zip(fused_grads, spelled_grads, strict=True):
        torch.testing.assert_close(f, s, rtol=1e-3, atol=1e-5)
    # and the fused path is the one taken inside the context only
    x = torch.randn(2, 8, requires_grad=True)
    with fused_kernels():
        names = [LayerNorm(8)(x).grad_fn.name(), gelu_tanh(x).grad_fn.name()]
    assert names == ["NativeLayerNormBackward0", "GeluBackward0"]
    assert LayerNorm(8)(x).grad_fn.name() == "MulBackward0" and gelu_tanh(x).grad_fn.name() == "MulBackward0"
