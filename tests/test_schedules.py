"""Step schedules (issue 26): parsing and its named errors, the step rule, the manifest's `schedules`, the sampler
on every runtime path (one-point schedule = single point bit for bit; a two-point schedule calls each point at its
steps, counted through the runner; reference, .pte and ONNX give the same image), eval's cost, profile, plan."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from elasticdit.cli import app
from elasticdit.errors import (
    PointNotInBundleError,
    PointResolutionError,
    ScheduleError,
    ScheduleSharesError,
    ScheduleSyntaxError,
    UnknownPointError,
)
from elasticdit.generation import BundleSource, CheckpointSource, noise_for, to_uint8
from elasticdit.model.sampler import sample
from elasticdit.schedule_search import compare_orderings, fronts, paired
from elasticdit.schedules import (
    Phase,
    Schedule,
    check,
    gflops_per_image,
    ordering,
    parse_named,
    parse_named_all,
    parse_schedule,
    resolve,
)

runner = CliRunner()
PROMPT = "a red circle left of a blue square"
TWO = "r2_d2:0.5,r1_d4:0.5"  # the session bundles' two points, cheap first


def invoke(args: list[str]):
    return runner.invoke(app, [str(a) for a in args])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB")).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ------------------------------------------------------------------------------------------------ parsing, rule


def test_parse_spec_and_plain_point():
    s = parse_schedule("r4_d3:0.3, r1_d6:0.7")
    assert s.phases == (Phase("r4_d3", 0.3), Phase("r1_d6", 0.7)) and s.spec == "r4_d3:0.3,r1_d6:0.7"
    assert s.points == ["r4_d3", "r1_d6"] and s.single is None
    one = parse_schedule("r1_d6")
    assert one.phases == (Phase("r1_d6", 1.0),) and one.single == "r1_d6" and one.spec == "r1_d6"
    assert parse_schedule("r1_d6:1").step_points(3) == one.step_points(3) == ["r1_d6"] * 3
    assert parse_schedule("r1_d6:0.1,r4_d3:0.2,r1_d6:0.7").points == ["r1_d6", "r4_d3"]  # a point may come back
    assert parse_schedule(s.spec) == s  # the canonical text reads back


def test_step_rule_is_the_contracts():
    s = parse_schedule("r4_d3:0.3,r1_d6:0.7")
    assert s.step_points(20) == ["r4_d3"] * 6 + ["r1_d6"] * 14  # (i + 0.5) / 20 < 0.3 for i <= 5
    assert s.step_points(10) == ["r4_d3"] * 3 + ["r1_d6"] * 7
    assert s.steps_per_point(7) == {"r4_d3": 2, "r1_d6": 5}  # 0.5/7, 1.5/7 < 0.3 <= 2.5/7
    # a boundary that falls on a step's midpoint goes to the next phase; a share under 1/N may run no step
    quarter = parse_schedule("r4_d3:0.25,r1_d6:0.75")
    assert quarter.step_points(2) == ["r1_d6", "r1_d6"] and quarter.step_points(4) == ["r4_d3"] + ["r1_d6"] * 3
    # shares that do not add up exactly in binary still end at 1: the last step runs the last phase
    three = parse_schedule("r4_d3:0.1,r2_d6:0.2,r1_d6:0.7")
    assert three.step_points(10) == ["r4_d3"] + ["r2_d6"] * 2 + ["r1_d6"] * 7
    for n in range(1, 40):  # the rule against its definition, with exact fractions
        from fractions import Fraction

        c = [Fraction(1, 10), Fraction(3, 10), Fraction(1)]
        want = [min(k for k in range(3) if Fraction(2 * i + 1, 2 * n) < c[k]) for i in range(n)]
        assert three.phase_per_step(n) == want, n


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("", ScheduleSyntaxError, "empty"),
        ("r4_d3:0.5,r1_d6", ScheduleSyntaxError, "'r1_d6' is not POINT:SHARE"),
        ("r4_d3,r1_d6", ScheduleSyntaxError, "'r4_d3' is not POINT:SHARE"),
        ("r4_d3:0.5:1", ScheduleSyntaxError, "is not POINT:SHARE"),
        ("r4_d3:half,r1_d6:0.5", ScheduleSharesError, "share 'half' is not a number"),
        ("r4_d3:0,r1_d6:1", ScheduleSharesError, "must be a number above 0"),
        ("r4_d3:-0.5,r1_d6:1.5", ScheduleSharesError, "must be a number above 0"),
        ("r4_d3:nan,r1_d6:1", ScheduleSharesError, "must be a number above 0"),
        ("r4_d3:0.3,r1_d6:0.6", ScheduleSharesError, "the shares sum to 0.9 (0.3 + 0.6), not 1"),
        ("r4_d3:0.5,r1_d6:0.6", ScheduleSharesError, "sum to 1.1"),
        ("fast:0.5,r1_d6:0.5", UnknownPointError, "'fast' is not an operating point name"),
    ],
)
def test_parse_errors_are_named(spec, error, message):
    with pytest.raises(error, match=None) as info:
        parse_schedule(spec)
    assert message in str(info.value) and isinstance(info.value, ScheduleError)


def test_checks_against_what_a_source_holds():
    s = parse_schedule("r4_d3:0.3,r1_d6:0.7")
    held = {"r1_d6": [(128, 128), (256, 256)], "r4_d3": [(256, 256)]}
    assert check(s, held) is s and check(s, held, (256, 256)) is s
    with pytest.raises(PointResolutionError, match="holds 'r4_d3' only at 256x256, not at 128x128"):
        check(s, held, (128, 128))
    with pytest.raises(PointNotInBundleError, match="has no operating point 'r4_d3' \\(it holds r1_d6\\)"):
        check(s, {"r1_d6": [(128, 128)]}, (128, 128))
    space = ["r1_d6", "r1_d3", "r4_d3"]
    with pytest.raises(UnknownPointError, match="unknown operating point 'r4_d3'"):
        check(s, held, model_points=["r1_d6", "r1_d3"])
    with pytest.raises(PointNotInBundleError):  # a point of the model, not exported
        check(s, {"r1_d6": [(128, 128)]}, model_points=space)


def test_named_schedules():
    s = parse_named("fast=r4_d3:0.3,r1_d6:0.7")
    assert s.name == "fast" and s.label == "fast" and s.spec == "r4_d3:0.3,r1_d6:0.7"
    for bad, message in [
        ("r4_d3:0.3,r1_d6:0.7", "is not NAME=SPEC"),
        ("=r1_d6", "is not NAME=SPEC"),
        ("r1_d6=r1_d6", "look like an operating point"),
        ("2fast=r1_d6", "must start with a letter"),
    ]:
        with pytest.raises(ScheduleSyntaxError, match=message):
            parse_named(bad)
    with pytest.raises(ScheduleSyntaxError, match="given twice"):
        parse_named_all(["a=r1_d6", "a=r1_d3"])
    assert resolve("fast", "r1_d6", {"fast": s}) is s and resolve(None, "r1_d6").single == "r1_d6"
    assert resolve("r1_d3", "r1_d6").single == "r1_d3"


def test_cost_and_ordering():
    g = {"r4_d3": 0.03, "r1_d6": 0.5}
    s = parse_schedule("r4_d3:0.3,r1_d6:0.7")
    assert gflops_per_image(s, 10, g, 4.0) == pytest.approx((3 * 0.03 + 7 * 0.5) * 2)
    assert gflops_per_image(s, 10, g, 1.0) == pytest.approx(3 * 0.03 + 7 * 0.5)
    assert ordering(s, g) == "cheap-first" and ordering(parse_schedule("r1_d6:0.7,r4_d3:0.3"), g) == "rich-first"
    assert ordering(parse_schedule("r4_d3:0.2,r1_d6:0.5,r4_d3:0.3"), g) == "mixed"


# ------------------------------------------------------------------------------------------------ sampler paths


def test_sampler_one_network_equals_the_same_network_every_step():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(4, 4, 1)
    x = torch.randn(1, 4, 3, 3)
    text, pooled = torch.zeros(1, 2, 3), torch.zeros(1, 3)

    def denoise(latent, sigma, t, p):
        return net(latent) * sigma.view(-1, 1, 1, 1)

    with torch.no_grad():
        one = sample(denoise, x, text, pooled, 5, 3.0)
        listed = sample([denoise] * 5, x, text, pooled, 5, 3.0)
        other = sample([denoise] * 4 + [lambda *a: denoise(*a) * 0], x, text, pooled, 5, 3.0)
    assert torch.equal(one, listed) and not torch.equal(one, other)
    with pytest.raises(ValueError, match="4 per-step networks for 5 steps"):
        sample([denoise] * 4, x, text, pooled, 5, 3.0)


def test_one_point_schedule_equals_the_single_point_path_bit_for_bit(tiny_ckpt, android_bundle):
    src = CheckpointSource(tiny_ckpt)
    m = src.models
    # the single-point path written out: one network for every step, as before schedules
    net = m.transformer.operating_point(src._points["r2_d2"], attention="masked")
    text, pooled = m.encode_prompt(PROMPT)
    u_text, u_pooled = m.encode_prompt("")
    shape = (1, src.cfg.transformer.in_channels, *src.cfg.latent_size())
    with torch.no_grad():
        latent = sample(net, noise_for(3, shape), text, pooled, 4, src.shift, 3.0, u_text, u_pooled)
        want = to_uint8(m.vae.decode(m.vae.unscale(latent)))
    for op in ("r2_d2", "r2_d2:1", Schedule((Phase("r2_d2", 0.5), Phase("r2_d2", 0.5)))):
        assert np.array_equal(src.generate(PROMPT, op, 4, 3.0, seed=3), want), op
    assert not np.array_equal(src.generate(PROMPT, "r1_d4", 4, 3.0, seed=3), want)  # the check can fail

    bundle = BundleSource(android_bundle[0])
    entry = bundle.manifest.point("r2_d2")
    text, pooled = bundle._encode(PROMPT)
    u_text, u_pooled = bundle._encode("")
    shape = [1, *entry.input("latent").shape[1:]]
    with torch.no_grad():
        latent = sample(
            bundle._denoise(entry),
            noise_for(3, shape),
            text,
            pooled,
            4,
            float(bundle.shift),
            3.0,
            u_text,
            u_pooled,
            batched_cfg=bundle.cfg_batch,
        )
        image = bundle._run(bundle.manifest.decoder, [latent / 1.7 + 0.2])[0]
    want = to_uint8(image)
    assert np.array_equal(bundle.generate(PROMPT, "r2_d2:1.0", 4, 3.0, seed=3), want)
    assert np.array_equal(bundle.generate(PROMPT, "r2_d2", 4, 3.0, seed=3), want)


def test_two_point_schedule_calls_each_point_at_its_steps(android_bundle):
    bundle = BundleSource(android_bundle[0])
    calls: list[str] = []
    real = bundle.runner.run

    def counted(entry, inputs):
        calls.append(entry.method)
        return real(entry, inputs)

    bundle.runner.run = counted
    steps: list[int] = []
    bundle.generate(PROMPT, "r2_d2:0.4,r1_d4:0.6", 5, 3.0, seed=0, on_step=lambda i, s: steps.append(i))
    denoise = [c for c in calls if c.startswith("denoise_")]
    # 5 steps: 0.5/5, 1.5/5 < 0.4 -> steps 0-1 r2_d2, 2-4 r1_d4; CFG unbatched: two calls a step
    assert denoise == ["denoise_r2_d2"] * 4 + ["denoise_r1_d4"] * 6 and steps == [0, 1, 2, 3, 4]
    assert calls[-1] == "decode" and calls.count("encode_text") == 2
    calls.clear()
    bundle.generate(PROMPT, "r1_d4:0.6,r2_d2:0.4", 5, 1.0, seed=0)  # rich first, guidance off: one call a step
    assert [c for c in calls if c.startswith("denoise_")] == ["denoise_r1_d4"] * 3 + ["denoise_r2_d2"] * 2


def test_checkpoint_runs_each_point_at_its_steps(tiny_ckpt):
    src = CheckpointSource(tiny_ckpt)
    ran: list[str] = []
    for name in ("r2_d2", "r1_d4"):
        src._net(name).register_forward_hook(lambda mod, args, out, name=name: ran.append(name))
    src.generate(PROMPT, "r1_d4:0.25,r2_d2:0.75", 4, 3.0, seed=0)
    assert ran == ["r1_d4"] + ["r2_d2"] * 3  # the reference runs CFG as one batch of 2: one call a step


def generate(source, out, schedule=TWO, extra=()):
    args = ["generate", source, "-p", PROMPT, "--schedule", schedule, "--steps", "4", "--seed", "5", "-o", out]
    result = invoke([*args, "--json", *extra])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def test_same_schedule_same_image_from_reference_pte_and_onnx(tiny_ckpt, android_bundle, onnx_bundle, tmp_path):
    ref = generate(tiny_ckpt, tmp_path / "ref.png")
    generate(android_bundle[0], tmp_path / "pte.png")
    generate(onnx_bundle[0], tmp_path / "onnx.png")
    generate(tiny_ckpt, tmp_path / "reversed.png", "r1_d4:0.5,r2_d2:0.5")
    images = {k: pixels(tmp_path / f"{k}.png") for k in ("ref", "pte", "onnx", "reversed")}
    pte, onnx = psnr(images["ref"], images["pte"]), psnr(images["ref"], images["onnx"])
    assert pte >= 40 and onnx >= 40
    # another schedule is told apart: further from the reference than either runtime (the random tiny model draws
    # near-grey noise from every point, about 50 dB apart, so the ranking, not the 40 dB line, separates them;
    # which point runs at which step is checked exactly above, through the runner)
    other = psnr(images["ref"], images["reversed"])
    assert not np.array_equal(images["ref"], images["reversed"]) and other < min(pte, onnx), (pte, onnx, other)
    assert ref["operating_point"] == TWO and ref["schedule"]["steps_per_point"] == {"r2_d2": 2, "r1_d4": 2}
    assert ref["gflops_per_image"] > 0


def test_generate_errors_are_one_line(tiny_ckpt, android_bundle, tmp_path):
    cases = [
        (tiny_ckpt, ["--schedule", "r2_d2:0.5,r9_d9:0.5"], "unknown operating point 'r9_d9'"),
        (android_bundle[0], ["--schedule", "r2_d2:0.5,r1_d2:0.5"], "has no operating point 'r1_d2'"),
        (android_bundle[0], ["--schedule", "r2_d2:0.5,r1_d4:0.4"], "the shares sum to 0.9"),
        (android_bundle[0], ["--schedule", "fast"], "unknown operating point 'fast'"),
        (tiny_ckpt, ["--schedule", TWO, "--op", "r2_d2"], "give --op or --schedule, not both"),
    ]
    for source, extra, message in cases:
        result = invoke(["generate", source, "-p", PROMPT, "-o", tmp_path / "x.png", *extra])
        assert result.exit_code == 1 and result.stderr.startswith("error: ") and message in result.stderr, extra
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------------------ manifest


def test_export_records_named_schedules_and_nothing_else_changes(tiny_ckpt, onnx_bundle, tmp_path):
    out = tmp_path / "onnx"
    args = ["export", tiny_ckpt, "--target", "onnx", "--ops", "r1_d4,r2_d2", "-o", out, "--json"]
    result = invoke([*args, "--schedule", f"fast={TWO}", "--schedule", "rich=r1_d4:0.75,r2_d2:0.25"])
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["schedules"] == {"fast": TWO, "rich": "r1_d4:0.75,r2_d2:0.25"}
    doc = json.loads((out / "manifest.json").read_text())
    plain = json.loads((onnx_bundle[0] / "manifest.json").read_text())
    assert "schedules" not in plain  # no schedule named: no key, the manifest as before
    assert list(doc).index("schedules") == list(doc).index("operating_points") + 1
    assert doc["schedules"]["fast"] == [{"point": "r2_d2", "share": 0.5}, {"point": "r1_d4", "share": 0.5}]
    assert {k: v for k, v in doc.items() if k != "schedules"} == plain  # files, hashes, everything else equal
    # a manifest schedule runs by name and is the same image as its spec
    named = generate(out, tmp_path / "named.png", "fast")
    generate(out, tmp_path / "spec.png", TWO)
    assert (tmp_path / "named.png").read_bytes() == (tmp_path / "spec.png").read_bytes()
    assert named["schedule"]["name"] == "fast"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("fast=r2_d2:0.5,r1_d2:0.5", "has no operating point 'r1_d2'"),  # of the model, not in --ops
        ("fast=r2_d2:0.5,r9_d9:0.5", "unknown operating point 'r9_d9'"),
        ("fast=r2_d2:0.5,r1_d4:0.6", "the shares sum to 1.1"),
        ("r2_d2=r2_d2", "look like an operating point"),
    ],
)
def test_export_refuses_a_bad_schedule_before_writing(tiny_ckpt, tmp_path, schedule, message):
    out = tmp_path / "never"
    result = invoke(
        ["export", tiny_ckpt, "--target", "onnx", "--ops", "r1_d4,r2_d2", "-o", out, "--schedule", schedule]
    )
    assert result.exit_code == 1 and message in result.stderr and not out.exists()


def test_manifest_schedules_are_checked_on_read(android_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(android_bundle[0], bundle)
    doc = json.loads((bundle / "manifest.json").read_text())
    for schedules, message in [
        ({"fast": [{"point": "r1_d2", "share": 1.0}]}, "has no operating point 'r1_d2'"),
        ({"fast": [{"point": "r2_d2", "share": 0.5}]}, "the shares sum to 0.5"),
        ({"fast": [{"point": "r2_d2"}]}, "is not {point, share}"),
        ({"fast": [{"point": "r2_d2", "share": True}]}, "share True is not a number"),
        ({"fast": []}, "must be a non-empty list"),
        ([], "'schedules' must be a table"),
    ]:
        (bundle / "manifest.json").write_text(json.dumps({**doc, "schedules": schedules}))
        result = invoke(["generate", bundle, "-p", PROMPT, "-o", tmp_path / "x.png"])
        assert result.exit_code == 1 and message in result.stderr, schedules
    # an entry at another resolution (a several-resolution bundle): the schedule asked at 128 px is refused
    entries = [dict(p) for p in doc["operating_points"]]
    entries[0]["resolution"] = [256, 256]
    (bundle / "manifest.json").write_text(json.dumps({**doc, "operating_points": entries}))
    result = invoke(["generate", bundle, "-p", PROMPT, "-o", tmp_path / "x.png", "--schedule", TWO])
    assert result.exit_code == 1 and "holds 'r1_d4' only at 256x256, not at 128x128" in result.stderr


# ------------------------------------------------------------------------------------------------ eval, profile


def test_eval_scores_schedules_with_the_steps_actually_run(tiny_ckpt):
    args = ["eval", tiny_ckpt, "--prompts", "2", "--steps", "4", "--ops", "r2_d2,r1_d4", "--json"]
    result = invoke([*args, "--schedule", "r2_d2:0.25,r1_d4:0.75", "--schedule", "r1_d4"])
    assert result.exit_code == 0, result.output + result.stderr
    doc = json.loads(result.stdout)
    g = {r["name"]: r["gflops"] for r in doc["operating_points"]}
    two, one = doc["schedules"]
    assert two["steps_per_point"] == {"r2_d2": 1, "r1_d4": 3} and two["phases"][0] == {"point": "r2_d2", "share": 0.25}
    assert two["gflops_per_image"] == pytest.approx((g["r2_d2"] + 3 * g["r1_d4"]) * 2, rel=1e-5)  # CFG: 2 passes
    assert one["gflops_per_image"] == pytest.approx(4 * 2 * g["r1_d4"], rel=1e-5)
    point = next(r for r in doc["operating_points"] if r["name"] == "r1_d4")
    assert one["score"] == point["score"] and {"score", "score_std", "per_category", "n"} <= set(two)


def test_profile_computes_and_measures_a_schedule(android_bundle, tmp_path):
    result = invoke(
        ["profile", android_bundle[0], "--ops", "r2_d2", "--schedule", TWO, "--schedule", "r2_d2", "--runs", "2",
         "--warmup", "1", "--steps", "4", "--threads", "1", "--no-op-breakdown", "--json", "--out", tmp_path / "p"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert [p["name"] for p in report["operating_points"]] == ["r2_d2", "r1_d4"]  # --ops, then the schedule's
    (row,) = report["schedules"]  # the one-point schedule is the point itself
    med = {p["name"]: p["denoise_ms"]["median"] for p in report["operating_points"]}
    text, decode = report["text_encoder"]["ms"]["median"], report["decoder"]["ms"]["median"]
    calls = report["settings"]["denoise_calls_per_step"]
    assert calls == 2 and row["steps_per_point"] == {"r2_d2": 2, "r1_d4": 2}
    assert row["computed_e2e_ms"] == pytest.approx(text + 2 * calls * (med["r2_d2"] + med["r1_d4"]) + decode, abs=1e-3)
    assert row["measured_e2e_ms"]["n"] == 2 and row["measured_e2e_ms"]["median"] > 0
    assert row["measured_e2e_cpu_ms"]["n"] == 2 and row["computed_e2e_cpu_ms"] > 0
    assert row["peak_memory_mb"] > 0 and set(row["memory"]["methods"]) >= {"denoise_r2_d2", "denoise_r1_d4"}
    assert all(p["denoise_cpu_ms"]["n"] == 2 for p in report["operating_points"])
    saved = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert saved["schedules"][0]["spec"] == TWO


# ------------------------------------------------------------------------------------------------ plan, search


def profile_results(tmp_path, schedules=()):
    """A profile of the session bundles' two points: text 5 ms, decode 20 ms, 2 denoise calls a step."""

    def point(name, denoise, gflops, memory):
        ms = {"min": denoise, "median": denoise, "p90": denoise, "all": [denoise]}
        return {"name": name, "gflops": gflops, "denoise_ms": ms, "decode_ms": {"median": 20.0},
                "text_encoder_ms": {"median": 5.0}, "peak_memory_mb": memory, "e2e_ms": 0.0}  # fmt: skip

    doc = {
        "device": {"kind": "host", "name": "bench"},
        "settings": {"steps": 4, "denoise_calls_per_step": 2},
        "operating_points": [point("r1_d4", 20.0, 0.4, 700), point("r2_d2", 2.0, 0.05, 120)],
        "schedules": list(schedules),
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(doc))
    return path


def quality(tmp_path, schedules):
    path = tmp_path / "quality.json"
    points = [{"name": "r1_d4", "score": 0.8}, {"name": "r2_d2", "score": 0.3}]
    path.write_text(json.dumps({"operating_points": points, "schedules": schedules}))
    return path


def phases(spec):
    return parse_schedule(spec).to_manifest()


def plan_cli(*args):
    return invoke(["plan", *args])


def plan_json(profile, budget, *args):
    result = plan_cli("--profile", profile, "--budget-ms", budget, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_weighs_schedules_with_their_scores(tmp_path):
    rich_first = "r1_d4:0.5,r2_d2:0.5"
    q = quality(
        tmp_path,
        [{"name": TWO, "phases": phases(TWO), "score": 0.78}, {"name": rich_first, "phases": phases(rich_first),
          "score": 0.6}],
    )  # fmt: skip
    prof = profile_results(tmp_path)
    result = plan_cli("--profile", prof, "--quality", q, "--budget-ms", "150", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    # 4 steps, 2 calls: the schedule = 5 + 2 x 2 x 2 + 2 x 2 x 20 + 20 = 113 ms; r1_d4 alone 185 ms, r2_d2 41 ms
    choice = doc["choice"]
    assert choice["name"] == TWO and choice["kind"] == "schedule" and choice["e2e_ms"] == pytest.approx(113.0)
    assert choice["steps_per_point"] == {"r2_d2": 2, "r1_d4": 2} and choice["gflops"] == pytest.approx(0.225)
    assert [c["name"] for c in doc["candidates"]] == [rich_first, "r2_d2"] and doc["ranked_by"] == "score"
    assert doc["weighed"] == {"points": 2, "schedules": 2}
    assert doc["rejected"][0]["name"] == "r1_d4" and "185.0 ms > 150 ms" in doc["rejected"][0]["reason"]
    # the budget that fits the full point takes it (score 0.8 beats 0.78); more steps, recomputed per step
    assert plan_json(prof, 200, "--quality", q)["choice"]["name"] == "r1_d4"
    eight = plan_json(prof, 150, "--quality", q, "--steps", 8)
    assert eight["choice"]["name"] == "r2_d2"  # the schedule needs 5 + 4*2*2 + 4*2*20 + 20 = 201 ms at 8 steps
    assert next(r for r in eight["rejected"] if r["name"] == TWO)["e2e_ms"] == pytest.approx(201.0)
    human = plan_cli("--profile", prof, "--quality", q, "--budget-ms", "150")
    assert f"{TWO}: 113.0 ms" in human.stdout and "weighed 2 operating points and 2 step schedules" in human.stdout


def test_plan_schedule_memory_and_missing_points(tmp_path):
    measured = {"name": "fast", "phases": phases(TWO), "peak_memory_mb": 750.0,
                "measured_e2e_ms": {"min": 110.0, "median": 111.0, "p90": 112.0, "n": 2}}  # fmt: skip
    prof = profile_results(tmp_path, [measured])
    q = quality(tmp_path, [{"phases": phases("r4_d2:0.5,r1_d4:0.5"), "score": 0.9}])
    doc = plan_json(prof, 150, "--quality", q)
    # the profile's schedule has no score, so the plan ranks by GFLOPs; its measured time and memory come along
    fast = doc["choice"]
    assert doc["ranked_by"] == "gflops" and fast["name"] == "fast" and fast["measured_e2e_ms"] == 111.0
    left = next(r for r in doc["rejected"] if r["kind"] == "schedule" and r["name"] != "fast")
    assert left["reason"] == "not in the profile: r4_d2" and left["e2e_ms"] is None
    doc = plan_json(prof, 150, "--memory-mb", 500)
    assert doc["choice"]["name"] == "r2_d2"  # the schedule holds both points: 750 MB > 500 MB
    assert next(r for r in doc["rejected"] if r["name"] == "fast")["reason"] == "750 MB > 500 MB"
    bad = quality(tmp_path, [{"phases": phases(TWO)[:1], "score": 0.5}])
    result = plan_cli("--profile", prof, "--quality", bad, "--budget-ms", "150")
    assert result.exit_code == 1 and "the shares sum to 0.5" in result.stderr


def test_fronts_and_orderings_on_a_known_table():
    def row(name, kind, gflops, score, order="single", spec=None):
        r = {"name": name, "kind": kind, "ordering": order, "gflops_per_image": gflops, "score": score}
        return {**r, "phases": phases(spec)} if spec else r

    table = [
        row("r2_d2", "point", 1.0, 0.2),
        row("r1_d2", "point", 2.0, 0.5),
        row("r2_d4", "point", 3.0, 0.4),  # dominated by r1_d2
        row("r1_d4", "point", 6.0, 0.8),
        row("c", "schedule", 3.5, 0.75, "cheap-first", "r2_d2:0.5,r1_d4:0.5"),
        row("r", "schedule", 3.5, 0.55, "rich-first", "r1_d4:0.5,r2_d2:0.5"),
    ]
    doc = fronts(table, "score", "gflops_per_image")
    assert doc["front"] == ["r2_d2", "r1_d2", "c", "r1_d4"] and doc["points_front"] == ["r2_d2", "r1_d2", "r1_d4"]
    assert doc["schedules_front"] == ["c"]
    gain = next(g for g in doc["front_vs_points"] if g["name"] == "c")
    assert gain["best_point_at_or_below_cost"] == "r1_d2" and gain["gain"] == pytest.approx(0.25)
    order = compare_orderings(table, "score", None)
    assert order["pairs"] == [{"cheap_first": "c", "rich_first": "r", "score_diff": pytest.approx(0.2)}]
    assert order["score"]["cheap_first_wins"] == 1 and order["score"]["rich_first_wins"] == 0
    assert paired([True, True, False, True], [True, False, False, True]) == pytest.approx((0.25, 0.25))


def test_search_schedules_writes_the_pareto_front_and_feeds_plan(tiny_ckpt, tmp_path):
    out = tmp_path / "search"
    args = ["eval", tiny_ckpt, "--search-schedules", "--prompts", "2", "--steps", "4", "--family-points",
            "r2_d2,r1_d4", "--out", out, "--json"]  # fmt: skip
    result = invoke(args)
    assert result.exit_code == 0, result.output + result.stderr
    doc = json.loads(result.stdout)
    assert json.loads((out / "pareto.json").read_text()) == doc
    with Image.open(out / "pareto.png") as png:
        assert png.format == "PNG" and png.size[0] > 400
    rows = {r["name"]: r for r in doc["candidates"]}
    kinds = [r["kind"] for r in doc["candidates"]]
    assert kinds.count("point") == 4 and kinds.count("schedule") == 6  # 3 shares x 2 orders of one pair
    assert doc["family_points"] == ["r2_d2", "r1_d4"] and doc["full_point"] == "r1_d4"
    assert doc["metric"] == "strict_score" and doc["second_metric"] == "score"  # the stricter rule leads
    assert rows["r1_d4"]["strict_score_vs_full"] == {"diff": 0.0, "std": 0.0, "within_1_sigma": True}
    for pair in doc["orderings"]["pairs"]:  # a mirror pair runs the same steps of each point: the same GFLOPs
        cheap, rich = rows[pair["cheap_first"]], rows[pair["rich_first"]]
        assert cheap["gflops_per_image"] == pytest.approx(rich["gflops_per_image"])
        assert cheap["steps_per_point"] == rich["steps_per_point"] and cheap["ordering"] == "cheap-first"
    assert len(doc["orderings"]["pairs"]) == 3
    # the front is exactly the candidates no other candidate beats on (GFLOPs, score)
    xy = {n: (r["gflops_per_image"], r["score"]) for n, r in rows.items()}

    def beaten(n):
        x, y = xy[n]
        return any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for m, (x2, y2) in xy.items() if m != n)

    assert set(doc["front"]) == {n for n in rows if not beaten(n)}
    # pareto.json is a quality table for plan: its schedules are weighed
    planned = plan_json(profile_results(tmp_path), 1e6, "--quality", out / "pareto.json")
    assert planned["weighed"]["schedules"] == 6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cost", "e2e_ms"], "--cost e2e_ms needs --profile"),
        (["--cost", "joules"], "--cost must be one of"),
        (["--shares", "0.5,1"], "--shares must lie strictly between 0 and 1"),
        (["--shares", "half"], "--shares must be numbers"),
    ],
)
def test_search_schedules_refuses_bad_options(tiny_ckpt, tmp_path, extra, message):
    result = invoke(["eval", tiny_ckpt, "--search-schedules", "--out", tmp_path / "s", *extra])
    assert result.exit_code == 1 and message in result.stderr and not (tmp_path / "s").exists()
