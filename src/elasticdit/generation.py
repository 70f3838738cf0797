"""`generate`: prompt to image on this host, through a bundle's methods or the PyTorch reference.

A *source* is either a bundle folder (android: ExecuTorch runtime; onnx: ONNX Runtime) or a checkpoint (the
PyTorch reference; default: the demo). Both sample the same way: the prompt's word tokens through the text
encoder, the empty prompt for classifier-free guidance, the seed's Gaussian noise (`noise_for`), `steps`
rectified-flow Euler steps with SD3's time shift, then the decoder on the latent unscaled with the latent's
scaling and shift factors. Same source, prompt, point, steps, guidance and
seed: the same image, byte for byte.

Where a point is named, a step schedule may be given instead (`schedules.py`: `r4_d3:0.3,r1_d6:0.7`, or a
schedule named in the bundle's manifest); a point is the one-phase schedule, so both take one code path: the
schedule and the step count give each step's point, and the sampler calls that point's network at that step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import BundleError, ElasticDiTError, OperatingPointError
from .model.sampler import sample, schedule_sigmas
from .noise_file import check_noise_shape, read_noise
from .schedules import Schedule, check, gflops_per_image, resolve

StepCallback = Callable[[int, float], None]


class GenerationError(ElasticDiTError):
    """The source cannot make images (no decoder, no text encoder where one is needed, a bad argument)."""


@dataclass(frozen=True)
class PointInfo:
    name: str
    gflops: float
    ratio: int
    depth: str


def noise_for(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """The initial latent of a seed: one draw of N(0, 1) from a generator seeded with it."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [0, 1] -> uint8 [H, W, 3]."""
    return (image[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")
    return path


class Source:
    """What `generate` and `eval` need from a bundle or a checkpoint."""

    kind: str  # "checkpoint" or the bundle's target
    resolution: tuple[int, int]
    steps: int
    guidance: float
    shift: float
    points: list[PointInfo]
    default_point: str
    named_schedules: dict[str, Schedule]  # a bundle's manifest schedules
    model_points: list[str] | None = None  # the model's whole space, when the source knows it (a checkpoint)

    def available(self) -> dict[str, list[tuple[int, int]]]:
        """Each point the source can run -> the resolutions it runs it at."""
        return {p.name: [tuple(self.resolution)] for p in self.points}

    def schedule(self, op: str | Schedule | None) -> Schedule:
        """What `--op` / `--schedule` name (a point, a spec, a manifest schedule's name), checked against the
        source at its resolution (named errors)."""
        schedule = resolve(op, self.default_point, self.named_schedules)
        if len(schedule.phases) == 1 and schedule.phases[0].point not in self.available():
            self.point(schedule.phases[0].point)  # a plain point name: the usual unknown-point error
        return check(
            schedule,
            self.available(),
            tuple(self.resolution),
            self.model_points,
            where=f"{getattr(self, 'path', 'the source')}",
        )

    def gflops_per_image(self, schedule: Schedule, steps: int, guidance: float) -> float:
        return gflops_per_image(schedule, steps, {p.name: p.gflops for p in self.points}, guidance)

    def point(self, name: str | None) -> PointInfo:
        name = name or self.default_point
        for p in self.points:
            if p.name == name:
                return p
        valid = ", ".join(p.name for p in self.points)
        raise OperatingPointError(f"unknown operating point '{name}'; valid: {valid}")

    def generate(
        self,
        prompt: str,
        op: str | Schedule | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        on_step: StepCallback | None = None,
        noise: torch.Tensor | None = None,
    ) -> np.ndarray:
        """uint8 [H, W, 3]; `op` a point, a schedule spec or a manifest schedule's name (None: the default point);
        `noise` (the initial latent, [1, C, h, w]) in place of the seed's."""
        raise NotImplementedError

    def generate_many(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        op: str | Schedule | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        on_image: Callable[[], None] | None = None,
    ) -> list[np.ndarray]:
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            images.append(self.generate(prompt, op, steps, guidance, seed))
            if on_image is not None:
                on_image()
        return images

    def settings(self, steps: int | None, guidance: float | None) -> tuple[int, float]:
        steps = self.steps if steps is None else steps
        guidance = self.guidance if guidance is None else guidance
        if steps <= 0:
            raise GenerationError(f"--steps must be positive, got {steps}")
        if guidance < 0:
            raise GenerationError(f"--cfg must be non-negative, got {guidance}")
        return steps, guidance


# ---------------------------------------------------------------------------------------------- checkpoint


class CheckpointSource(Source):
    """The PyTorch reference (masked SSBA, float32); each point's GFLOPs are its deployed graph's."""

    kind = "checkpoint"

    def __init__(self, path: str | Path, attention: str = "masked", resolution: tuple[int, int] | None = None):
        from .checkpoint import load_checkpoint
        from .inspection import DEFAULT_ATTENTION, _example_inputs, count_cost
        from .operating_points import full_point, operating_points

        ck = load_checkpoint(path, resolution)
        self.path, self.attention = Path(path), attention
        self.models = ck.models()
        cfg = self.cfg = ck.cfg
        if self.models.vae is None:
            raise GenerationError(f"{path} has no VAE decoder, so it cannot make images")
        self.resolution = resolution or cfg.resolution
        self.steps, self.guidance, self.shift = cfg.scheduler.steps, cfg.scheduler.guidance_scale, cfg.scheduler.shift
        self._points = {p.name: p for p in operating_points(cfg)}
        inputs = _example_inputs(cfg, self.resolution, "cpu")
        # the cost axis is the deployed graph's (SSBA lowered as `inspect` and the android export lower it), not
        # the masked reference's, which computes every attention score and masks the skipped ones
        self.points = []
        for p in self._points.values():
            net = self.models.transformer.operating_point(p, self.resolution, DEFAULT_ATTENTION)
            _, gflops = count_cost(net, inputs)
            self.points.append(PointInfo(p.name, gflops, p.ratio, p.depth))
        self.default_point = full_point(cfg).name
        self.model_points = list(self._points)
        self.named_schedules = {}
        self._nets: dict[str, torch.nn.Module] = {}

    def _net(self, name: str) -> torch.nn.Module:
        if name not in self._nets:
            point = self._points[name]
            self._nets[name] = self.models.transformer.operating_point(point, self.resolution, self.attention)
        return self._nets[name]

    @torch.no_grad()
    def _sample(self, prompts, seeds, schedule, steps, guidance, on_step=None) -> torch.Tensor:
        cfg = self.cfg
        lh, lw = cfg.latent_size(self.resolution)
        noise = torch.cat([noise_for(s, (1, cfg.transformer.in_channels, lh, lw)) for s in seeds])
        return self.denoise(prompts, noise, schedule, steps, guidance, on_step=on_step)

    @torch.no_grad()
    def denoise(
        self, prompts, latent, op, steps, guidance, start_step=0, on_step=None, negative_prompt: str = ""
    ) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1]: `latent` (scaled, at the sampler's `start_step`-th sigma) sampled to
        the end with point or schedule `op` and decoded; guidance pushes away from `negative_prompt`."""
        schedule = self.schedule(op)
        m = self.models
        encoded = [m.encode_prompt(p) for p in prompts]
        text = torch.cat([e[0] for e in encoded])
        pooled = torch.cat([e[1] for e in encoded])
        u_text, u_pooled = m.encode_prompt(negative_prompt)
        sched = self.cfg.scheduler
        b = len(prompts)
        latent = sample(
            [self._net(name) for name in schedule.step_points(steps)],
            latent,
            text,
            pooled,
            steps,
            self.shift,
            guidance,
            u_text.expand(b, -1, -1),
            u_pooled.expand(b, -1),
            on_step=on_step,
            start_step=start_step,
            sigmas=schedule_sigmas(sched.kind, steps, self.shift, sched.num_train_timesteps),
        )
        return m.vae.decode(m.vae.unscale(latent))

    def generate(self, prompt, op=None, steps=None, guidance=None, seed=0, on_step=None, noise=None) -> np.ndarray:
        schedule = self.schedule(op)
        steps, guidance = self.settings(steps, guidance)
        if noise is None:
            return to_uint8(self._sample([prompt], [seed], schedule, steps, guidance, on_step))
        shape = (1, self.cfg.transformer.in_channels, *self.cfg.latent_size(self.resolution))
        latent = check_noise_shape(noise, shape).clone()
        return to_uint8(self.denoise([prompt], latent, schedule, steps, guidance, on_step=on_step))

    def generate_many(self, prompts, seeds, op=None, steps=None, guidance=None, on_image=None, batch: int = 16):
        """Batched (the reference is not shape-static); each image matches `generate` to float rounding."""
        schedule = self.schedule(op)
        steps, guidance = self.settings(steps, guidance)
        images = []
        for i in range(0, len(prompts), batch):
            out = self._sample(prompts[i : i + batch], seeds[i : i + batch], schedule, steps, guidance)
            for j in range(out.shape[0]):
                images.append(to_uint8(out[j : j + 1]))
                if on_image is not None:
                    on_image()
        return images


# ---------------------------------------------------------------------------------------------- bundles


class BundleSource(Source):
    """A bundle run through its methods only, as an app would: everything it needs comes from the manifest."""

    def __init__(self, path: str | Path, threads: int | None = None, resolution: tuple[int, int] | None = None):
        """`resolution`: one of the bundle's `resolutions` (default: its first)."""
        from .bundle.reader import read_bundle

        opened = read_bundle(path, check=False)
        self.path, self.manifest = opened.path, opened.manifest
        doc = self.manifest
        self.kind = doc.target
        try:
            points, decoder = doc.points_at(resolution), doc.decoder_at(resolution)
        except BundleError as exc:
            raise GenerationError(f"{self.path}: {exc}") from None
        if decoder is None:
            raise GenerationError(f"{self.path} has no decode method, so it cannot make images")
        self.decoder = decoder
        self.resolution = resolution or doc.resolution
        sched = doc.scheduler
        self.steps, self.guidance, self.shift = int(sched["steps"]), float(sched["guidance_scale"]), sched["shift"]
        self.latent = doc.latent
        self.cfg_batch = doc.cfg_batch
        self._entries = {p.name: p for p in points}
        self.points = [PointInfo(p.name, p.gflops, p.compression_ratio, p.depth) for p in points]
        self.default_point = doc.default_operating_point or self.points[0].name
        self.named_schedules = dict(doc.schedules)
        if not opened.target.runs_without_checkpoint:
            raise GenerationError(
                f"{self.path} is a {self.kind} bundle; this host cannot run it (Core ML runs only on Apple devices)"
            )
        self.runner = opened.target.host_runner(self.path, doc, threads)
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._tokenize: Callable[[str], list[int]] | None = None

    def _run(self, entry: Any, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.runner.run(entry, inputs)

    def _tokenizer(self) -> Callable[[str], list[int]]:
        if self._tokenize is None:
            from .bundle.tokenizers import load_tokenizer

            entry = self.manifest.text_encoder
            assert entry is not None
            if entry.tokenizer is None:
                raise GenerationError(f"{self.path}: the manifest does not describe the tokenizer of encode_text")
            self._tokenize = load_tokenizer(entry.tokenizer, self.path, self.manifest.files)
        return self._tokenize

    def _encode(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """text [1, L, Dt], pooled [1, Dp] from the bundle's encode_text method."""
        if prompt in self._text_cache:
            return self._text_cache[prompt]
        entry = self.manifest.text_encoder
        point = next(iter(self._entries.values()))
        if entry is None:
            if prompt:
                raise GenerationError(f"{self.path} has no text encoder; only the empty prompt can be used")
            text = torch.zeros(point.input("text").shape[1:])[None]
            pooled = torch.zeros(point.input("pooled").shape[1:])[None]
        else:
            ids = torch.tensor([self._tokenizer()(prompt)], dtype=torch.int64)
            text, pooled = self._run(entry, [ids])[:2]
        self._text_cache[prompt] = (text, pooled)
        return text, pooled

    def _denoise(self, entry: Any) -> Callable[..., torch.Tensor]:
        batch = int(entry.input("latent").shape[0])

        def call(latent, timestep, text, pooled):
            n = latent.shape[0]
            if n == batch:
                return self._run(entry, [latent, timestep.float(), text, pooled])[0]
            if n == 1 and batch == 2:  # a CFG-batched method asked for one row: run it twice over
                twice = [torch.cat([t, t]) for t in (latent, timestep.float(), text, pooled)]
                return self._run(entry, twice)[0][:1]
            if n == 2 and batch == 1:
                halves = [
                    self._run(entry, [t[i : i + 1] for t in (latent, timestep.float(), text, pooled)])[0]
                    for i in range(2)
                ]
                return torch.cat(halves)
            raise BundleError(f"{self.path}: method {entry.method} takes batch {batch}, asked for {n}")

        return call

    def available(self) -> dict[str, list[tuple[int, int]]]:
        return self.manifest.point_resolutions()

    def forget_prompts(self) -> None:
        """Drop the cached text embeddings except the unconditional one (an app computes that once)."""
        self._text_cache = {k: v for k, v in self._text_cache.items() if k == ""}

    @torch.no_grad()
    def generate(self, prompt, op=None, steps=None, guidance=None, seed=0, on_step=None, noise=None) -> np.ndarray:
        schedule = self.schedule(op)
        steps, guidance = self.settings(steps, guidance)
        entries = {name: self.manifest.point(name, self.resolution) for name in schedule.points}
        denoise = {name: self._denoise(entry) for name, entry in entries.items()}
        text, pooled = self._encode(prompt)
        u_text, u_pooled = self._encode("")
        shape = list(entries[schedule.points[0]].input("latent").shape)
        shape[0] = 1
        latent = sample(
            [denoise[name] for name in schedule.step_points(steps)],
            noise_for(seed, shape) if noise is None else check_noise_shape(noise, shape).clone(),
            text,
            pooled,
            steps,
            float(self.shift),
            guidance,
            u_text,
            u_pooled,
            batched_cfg=self.cfg_batch,
            on_step=on_step,
            sigmas=schedule_sigmas(
                self.manifest.scheduler.get("kind", "rectified_flow_euler"),
                steps,
                float(self.shift),
                int(self.manifest.scheduler.get("num_train_timesteps", 1000)),
            ),
        )
        scale = float(self.latent.get("scaling_factor", 1.0))
        shift = float(self.latent.get("shift_factor", 0.0))
        image = self._run(self.decoder, [latent / scale + shift])[0]
        return to_uint8(image)


def open_source(
    path: str | Path | None = None, threads: int | None = None, resolution: tuple[int, int] | None = None
) -> Source:
    """A bundle folder or a checkpoint file (default: the demo checkpoint), sampling at `resolution` (default: the
    bundle's or the checkpoint's own)."""
    if path is None:
        from .demo_checkpoint import demo_checkpoint_path

        return CheckpointSource(demo_checkpoint_path(), resolution=resolution)
    path = Path(path)
    if path.is_dir():
        return BundleSource(path, threads, resolution)
    if not path.exists():
        raise GenerationError(f"{path} does not exist (expected a bundle folder or a checkpoint)")
    return CheckpointSource(path, resolution=resolution)


def generate_image(
    source: Source | str | Path | None,
    prompt: str,
    output: str | Path,
    op: str | Schedule | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    on_step: StepCallback | None = None,
    noise: str | Path | None = None,
) -> dict[str, Any]:
    """Generate one PNG; returns a summary of what ran. `noise`: a noise file (`noise_file.py`) instead of the seed."""
    src = source if isinstance(source, Source) else open_source(source, threads)
    schedule = src.schedule(op)
    used_steps, used_guidance = src.settings(steps, guidance)
    initial = read_noise(noise) if noise is not None else None
    image = src.generate(prompt, schedule, used_steps, used_guidance, seed, on_step, initial)
    path = save_png(image, output)
    per_image = src.gflops_per_image(schedule, used_steps, used_guidance)
    summary = {
        "output": str(path),
        "source": str(getattr(src, "path", source)),
        "kind": src.kind,
        "prompt": prompt,
        "operating_point": schedule.single or schedule.spec,
        "gflops": src.point(schedule.single).gflops
        if schedule.single
        else round(per_image / used_steps / (2 if used_guidance != 1.0 else 1), 6),
        "gflops_per_image": round(per_image, 6),
        "steps": used_steps,
        "guidance": used_guidance,
        "seed": None if noise is not None else seed,
        "noise": None if noise is None else str(noise),
        "resolution": list(src.resolution),
    }
    if schedule.single is None or schedule.name:
        summary["schedule"] = {**schedule.to_dict(), "steps_per_point": schedule.steps_per_point(used_steps)}
    return summary
