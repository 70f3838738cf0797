"""The demo trainer: the ElasticDiT on flat-shape scenes, on the CPU, in a fixed time budget
(`python -m elasticdit.demo.train`, demo/train.py, is its command; demo/plan.py its plan).

Two phases, each resumable from DIR/state.pt (saved every `save_every` steps and at the end of a phase):

1. `vae`: the T-DVAE (Haar DWT encoder, IDWT decoder) on random crops of rendered scenes: L1 + MSE
   reconstruction, a little latent L2, and small latent noise so the decoder forgives an imperfect sampler.
   Then every training scene is encoded once; the latent mean and std give `shift_factor` and
   `scaling_factor`.
2. `dit`: the text encoder and the ElasticDiT together, rectified flow on the cached latents, elastically with
   the sandwich rule (each step the full operating point, the lightest and one other at random, gradients
   summed) and SSBA masks on. The prompt is dropped for `cfg_dropout` of the rows, so classifier-free
   guidance works. The checkpoint holds the EMA weights.

With `minutes` the run is budgeted by wall time (each phase gets its share, learning rates follow the phase's
elapsed fraction, so a busy machine trains fewer steps rather than longer); with explicit step counts it is
exactly reproducible from the seed, and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import save_checkpoint
from ..config import ModelConfig
from ..model.layers import fused_kernels
from ..model.pipeline import build_models
from ..model.sampler import training_pair
from ..model.text_encoder import tokenize
from ..operating_points import OperatingPoint, full_point, lightest_point, operating_points
from .initialization import init_weights
from .plan import RESUME_MUST_MATCH, TrainPlan, check_saved
from .shapes import render, training_scenes
from .shared_projections import check_shareable, effective_tensors, zero_differences
from .steps import EMA, lr_factor, random_picks, sample_sigmas, training_net

STATE_FILE = "state.pt"
LATENTS_FILE = "latents.pt"
LOG_FILE = "log.jsonl"
CHECKPOINT_FILE = "demo.safetensors"
LATENTS_MUST_MATCH = ("seed", "scenes", "layout", "category_weights")


def render_scenes(scenes: list, size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size]."""
    return torch.from_numpy(np.stack([render(s, size) for s in scenes])).permute(0, 3, 1, 2).contiguous()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float(), b.float()).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


class Trainer:
    def __init__(self, out: Path, cfg: ModelConfig, plan: TrainPlan, seed: int, log=print):
        if cfg.vae is None or cfg.text_encoder is None or not cfg.vae.has_encoder:
            raise ValueError("the demo trains a config with a T-DVAE (with encoder) and a text encoder")
        self.out, self.cfg, self.plan, self.seed, self.log_fn = Path(out), cfg, plan, seed, log
        self.shared = plan.ratio_projections == "shared"
        self.fixed = [full_point(cfg), lightest_point(cfg)]  # trained every step
        # each stage's (per-ratio groups, random pick's points, their weights): the plan's, then its late stage's
        self.stages = [random_picks(cfg, stage) for stage in (plan, plan.late()) if stage is not None]
        self.out.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(plan.threads)
        torch.manual_seed(seed)
        self.models = build_models(cfg)
        init_weights(self.models, seed, plan.token_embedding_std)
        if self.shared:
            check_shareable(self.models.transformer)
            zero_differences(self.models.transformer)
        self.generator = torch.Generator().manual_seed(seed)
        m = self.models
        self.vae_opt = torch.optim.AdamW(m.vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)
        decay, no_decay = [], []
        for module in (m.transformer, m.text_encoder):
            for name, p in module.named_parameters():
                (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
        self.dit_opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": plan.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=plan.dit_lr,
            betas=(0.9, 0.99),
        )
        self.ema = EMA([m.transformer, m.text_encoder], plan.ema)
        self.phase, self.step, self.elapsed = "vae", 0, 0.0  # elapsed: wall seconds of the whole run so far
        self.phase_start = 0.0  # elapsed when the current phase began
        self.scaling = (1.0, 0.0)  # (scaling_factor, shift_factor), set after the VAE phase
        self.latents: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None
        self._images: torch.Tensor | None = None
        self._clock = time.monotonic()

    # ---- bookkeeping

    @contextlib.contextmanager
    def kernels(self) -> Iterator[None]:
        """How the training passes compute: bfloat16 autocast and fused kernels, as the plan says."""
        fused = fused_kernels() if self.plan.fused_kernels else contextlib.nullcontext()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.plan.bf16), fused:
            yield

    def _tick(self) -> None:
        now = time.monotonic()
        self.elapsed += now - self._clock
        self._clock = now

    def _budget(self, phase: str) -> float | None:
        p = self.plan
        if p.minutes is None:
            return None
        total = p.minutes * 60.0
        if phase == "vae":
            return total * p.vae_share
        return total - p.reserve_minutes * 60.0 - self.phase_start

    def _progress(self, phase: str) -> float:
        budget = self._budget(phase)
        if budget is None:
            steps = self.plan.vae_steps if phase == "vae" else self.plan.dit_steps
            return self.step / max(steps, 1)
        return (self.elapsed - self.phase_start) / max(budget, 1e-9)

    def log(self, record: dict[str, Any]) -> None:
        record = {"phase": self.phase, "step": self.step, "elapsed_s": round(self.elapsed, 1), **record}
        with open(self.out / LOG_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
        self.log_fn(" ".join(parts))

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "plan": dataclasses.asdict(self.plan),
            "config": self.cfg.to_json(),
            "phase": self.phase,
            "step": self.step,
            "elapsed": self.elapsed,
            "phase_start": self.phase_start,
            "scaling": list(self.scaling),
            "models": self.models.state_dict(),
            "vae_opt": self.vae_opt.state_dict(),
            "dit_opt": self.dit_opt.state_dict(),
            "ema": list(self.ema.shadow),
            "generator": self.generator.get_state(),
        }

    def save_state(self) -> None:
        self._tick()
        tmp = self.out / (STATE_FILE + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(self.out / STATE_FILE)

    def load_state(self) -> None:
        state = torch.load(self.out / STATE_FILE, weights_only=True)
        if state["config"] != self.cfg.to_json() or state["seed"] != self.seed:
            raise ValueError(f"{self.out / STATE_FILE} was saved for another config or seed; not resuming")
        saved = check_saved(state["plan"], RESUME_MUST_MATCH, str(self.out / STATE_FILE))
        for name in RESUME_MUST_MATCH:
            if saved[name] != getattr(self.plan, name):
                raise ValueError(f"{self.out / STATE_FILE} trained with {name} {saved[name]!r}; not resuming")
        for prefix, module in self.models.parts().items():  # copy into the live parameters (optimizers hold them)
            module.load_state_dict(
                {k[len(prefix) + 1 :]: v for k, v in state["models"].items() if k.startswith(prefix + ".")}
            )
        self.vae_opt.load_state_dict(state["vae_opt"])
        self.dit_opt.load_state_dict(state["dit_opt"])
        with torch.no_grad():
            for s, saved in zip(self.ema.shadow, state["ema"], strict=True):
                s.copy_(saved)
        self.generator.set_state(state["generator"])
        self.phase, self.step = state["phase"], state["step"]
        self.elapsed, self.phase_start = state["elapsed"], state["phase_start"]
        self.scaling = tuple(state["scaling"])
        self._clock = time.monotonic()

    # ---- data

    def scenes(self) -> list:
        return training_scenes(self.plan.scenes, self.seed, self.plan.layout, self.plan.category_weights)

    def images(self) -> torch.Tensor:
        if self._images is None:
            self._images = render_scenes(self.scenes(), self.cfg.resolution[0])
        return self._images

    # ---- phase 1: the T-DVAE

    def train_vae(self) -> None:
        p, vae = self.plan, self.models.vae
        images = self.images()
        n, size = images.shape[0], images.shape[-1]
        crop = min(p.vae_crop, size)
        vae.train()
        while True:
            self._tick()
            progress = self._progress("vae")
            if progress >= 1.0:
                break
            lr = p.vae_lr * lr_factor(self.step, progress, p)
            for group in self.vae_opt.param_groups:
                group["lr"] = lr
            idx = torch.randint(n, (p.vae_batch,), generator=self.generator)
            top, left = (torch.randint(size - crop + 1, (2,), generator=self.generator) // 8 * 8).tolist()
            x = to_unit(images[idx, :, top : top + crop, left : left + crop]) * 2.0 - 1.0
            with self.kernels():
                z = vae.encoder(x).float()
                std = z.detach().std()
                noise = torch.randn(z.shape, generator=self.generator) * std * p.latent_noise
                recon = vae.decoder(z + noise).float()
            l1, l2 = F.l1_loss(recon, x), F.mse_loss(recon, x)
            loss = l1 + l2 + p.latent_l2 * z.pow(2).mean()
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            self.vae_opt.step()
            self.step += 1
            if self.step % p.log_every == 0:
                self.log(
                    {
                        "loss": loss.item(),
                        "l1": l1.item(),
                        "psnr": psnr(recon * 0.5 + 0.5, x * 0.5 + 0.5),
                        "latent_std": std.item(),
                        "lr": lr,
                    }
                )
            if self.step % p.save_every == 0:
                self.save_state()
        vae.eval()
        self.encode_scenes()
        self.phase, self.step, self.phase_start = "dit", 0, self.elapsed
        self.save_state()

    @torch.no_grad()
    def encode_scenes(self) -> None:
        """Every training scene's latent (unscaled), once; their mean/std give the scaling and shift factors."""
        images = self.images()
        with self.kernels():
            latents = torch.cat([self.models.vae.encode(to_unit(b)).float() for b in images.split(256)])
        shift = float(latents.mean())
        scale = float(1.0 / latents.std())
        self.scaling = (scale, shift)
        held = images[-256:]
        recon = self.models.vae.decode(latents[-256:])
        self.log(
            {
                "encoded": len(latents),
                "scaling_factor": scale,
                "shift_factor": shift,
                "train_psnr": psnr(recon, to_unit(held)),
            }
        )
        saved = {
            "latents": latents,
            "seed": self.seed,
            "scenes": len(latents),
            "layout": self.plan.layout,
            "category_weights": self.plan.category_weights,
        }
        torch.save(saved, self.out / LATENTS_FILE)
        self.latents = latents

    def load_latents(self) -> torch.Tensor:
        if self.latents is None:
            path = self.out / LATENTS_FILE
            saved = check_saved(torch.load(path, weights_only=True), LATENTS_MUST_MATCH, str(path))
            run = (saved["seed"], saved["scenes"], saved["layout"], saved["category_weights"])
            if run != (self.seed, self.plan.scenes, self.plan.layout, self.plan.category_weights):
                raise ValueError(f"{self.out / LATENTS_FILE} belongs to another run")
            self.latents = saved["latents"]
        return self.latents

    # ---- phase 2: text encoder + ElasticDiT, sandwich rule

    def prompt_tokens(self) -> torch.Tensor:
        if self.tokens is None:
            te, length = self.cfg.text_encoder, self.cfg.transformer.text_len
            self.tokens = torch.tensor([tokenize(s.prompt, te.vocab, length) for s in self.scenes()])
        return self.tokens

    def train_dit(self) -> None:
        p, m = self.plan, self.models
        scale, shift = self.scaling
        x_all = (self.load_latents() - shift) * scale
        tokens_all = self.prompt_tokens()
        empty = torch.tensor(tokenize("", self.cfg.text_encoder.vocab, self.cfg.transformer.text_len))
        nets = {q.name: training_net(m, q, self.shared) for q in operating_points(self.cfg)}
        m.transformer.train()
        m.text_encoder.train()
        params = [q for group in self.dit_opt.param_groups for q in group["params"]]
        while True:
            self._tick()
            progress = self._progress("dit")
            if progress >= 1.0:
                break
            factor = lr_factor(self.step, progress, p)
            for group in self.dit_opt.param_groups:
                group["lr"] = p.dit_lr * factor
            idx = torch.randint(len(x_all), (p.dit_batch,), generator=self.generator)
            x0, tokens = x_all[idx], tokens_all[idx].clone()
            drop = torch.rand(p.dit_batch, generator=self.generator) < p.cfg_dropout
            tokens[drop] = empty
            step_points = self.step_points(progress)
            with self.kernels():
                text, pooled = m.text_encoder(tokens)
                losses = self.sandwich_losses([nets[q.name] for q in step_points], x0, text, pooled)
            losses = dict(zip([q.name for q in step_points], losses, strict=True))
            loss = sum(torch.log(v) for v in losses.values()) if p.loss_balance == "log" else sum(losses.values())
            self.dit_opt.zero_grad(set_to_none=True)
            loss.backward()
            grad = nn.utils.clip_grad_norm_(params, 1.0)
            self.dit_opt.step()
            self.ema.update(self.step)
            self.step += 1
            if self.step % p.log_every == 0:
                record = {"loss": loss.item(), "lr": p.dit_lr * factor, "grad": float(grad)}
                record |= {f"loss_{k}": v.item() for k, v in losses.items()}
                self.log(record)
            if self.step % p.save_every == 0:
                self.save_state()
                self.write_checkpoint()
        self.phase = "done"
        self.save_state()

    def sandwich_losses(
        self, nets: list[nn.Module], x0: torch.Tensor, text: torch.Tensor, pooled: torch.Tensor
    ) -> list[torch.Tensor]:
        """Each net's loss on one batch; the first is the full point, which the others distill from if the plan
        says so (then all share its noise and timesteps)."""

        def noised() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            sigma = sample_sigmas(len(x0), self.generator, self.plan.sigma_shift)
            return sigma, *training_pair(x0, torch.randn(x0.shape, generator=self.generator), sigma)

        if not self.plan.distill:
            losses = []
            for net in nets:
                sigma, xt, target = noised()
                losses.append(F.mse_loss(net(xt, sigma, text, pooled).float(), target))
            return losses
        sigma, xt, target = noised()
        predicted = nets[0](xt, sigma, text, pooled).float()
        distilled = torch.lerp(target, predicted.detach(), self.plan.distill)
        rest = [F.mse_loss(net(xt, sigma, text, pooled).float(), distilled) for net in nets[1:]]
        return [F.mse_loss(predicted, target), *rest]

    def step_points(self, progress: float) -> list[OperatingPoint]:
        """The points a step at DiT `progress` trains: the full, the lightest, one of each group, one random other
        (the groups and the pick those of the plan's late stage from its `late_from` on)."""
        late = len(self.stages) > 1 and progress >= self.plan.late_from
        per_ratio, others, weights = self.stages[1 if late else 0]
        picks = [g[int(torch.randint(len(g), (1,), generator=self.generator))] for g in per_ratio]
        picks.append(self.pick(others, weights))
        return [*self.fixed, *picks]

    def pick(self, points: list[OperatingPoint], weights: torch.Tensor) -> OperatingPoint:
        if bool((weights == 1.0).all()):  # uniform: the draw of the checkpoints before 2026-12-01
            return points[int(torch.randint(len(points), (1,), generator=self.generator))]
        return points[int(torch.multinomial(weights, 1, generator=self.generator))]

    # ---- output

    def trained_config(self) -> ModelConfig:
        scale, shift = self.scaling
        vae = dataclasses.replace(self.cfg.vae, scaling_factor=scale, shift_factor=shift)
        return dataclasses.replace(self.cfg, vae=vae)

    def write_checkpoint(self, path: Path | None = None) -> str:
        """The EMA transformer and text encoder with the trained T-DVAE, as a v1 checkpoint."""
        path = path or self.out / CHECKPOINT_FILE
        dtype = getattr(torch, self.plan.dtype)
        self.ema.swap()
        try:
            state = self.models.state_dict()
            if self.shared:
                state |= {f"transformer.{k}": v for k, v in effective_tensors(self.models.transformer).items()}
            tensors = {k: v.detach().to(dtype).clone() for k, v in state.items()}
        finally:
            self.ema.swap()
        tmp = path.with_suffix(".tmp")
        sha = save_checkpoint(tmp, self.trained_config(), tensors)
        tmp.replace(path)
        return sha

    def run(self, resume: bool = False) -> Path:
        state = self.out / STATE_FILE
        if resume and state.is_file():
            self.load_state()
            self.log({"resumed": True})
        elif state.is_file() and not resume:
            raise FileExistsError(f"{state} exists: pass --resume to continue it, or choose another --out")
        if self.phase == "vae":
            self.train_vae()
        if self.phase == "dit":
            self.train_dit()
        sha = self.write_checkpoint()
        self.log({"checkpoint": str(self.out / CHECKPOINT_FILE), "sha256": sha})
        return self.out / CHECKPOINT_FILE


def train(
    out: str | Path,
    cfg: ModelConfig | None = None,
    plan: TrainPlan | None = None,
    seed: int = 0,
    resume: bool = False,
    log=print,
) -> Path:
    """Train (or resume) into `out`; returns the path of the written checkpoint."""
    from .config import demo_config

    random.seed(seed)
    np.random.seed(seed)
    trainer = Trainer(Path(out), cfg or demo_config(), plan or TrainPlan(), seed, log)
    return trainer.run(resume)
