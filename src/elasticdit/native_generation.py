"""`generate BUNDLE --runner native|PATH`: the bundle's images made by its target's native app-side runner
(`Target.app_runner`: elasticdit-run for ExecuTorch bundles, docs/runtime.md) instead of this process.

The seed's noise is drawn here exactly as `generation.noise_for` draws it (torch's generator cannot be reproduced
in C++) and handed to the runner as a .npy file, so both runners start from the same latent and give the same
image. A step schedule goes to the runner's `--schedule` (`runner_schedule`), `--resolution` to its `--resolution
HxW` (the bundle's `denoise_<point>_<H>x<W>` and `decode_<H>x<W>` methods). A `Source`, so `generate_image` (and
`evaluate_source`) run it as they run the others.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .generation import GenerationError, PointInfo, Source, StepCallback, noise_for
from .schedules import Schedule


def runner_schedule(schedule: Schedule, named: dict[str, Schedule]) -> str:
    """elasticdit-run's `--schedule` for a checked schedule: its manifest name when the bundle names it with the same
    phases, else `POINT:SHARE,...` with every share written exactly (repr), so both runners cut the steps alike."""
    if schedule.name and named.get(schedule.name) is not None and named[schedule.name].phases == schedule.phases:
        return schedule.name
    return ",".join(f"{p.point}:{p.share!r}" for p in schedule.phases)


class AppRunnerSource(Source):
    """A bundle run by its target's app-side runner; `timings` holds the last run's timings document."""

    def __init__(
        self,
        path: str | Path | None,
        runner: str | Path,
        threads: int | None = None,
        resolution: tuple[int, int] | None = None,
    ):
        """`resolution`: one of the bundle's `resolutions` (default: its first)."""
        from .bundle.reader import read_bundle
        from .errors import BundleError

        if path is None or not Path(path).is_dir():
            raise GenerationError(
                f"--runner {runner} runs a bundle folder (elasticdit-run runs ExecuTorch bundles), not a checkpoint"
            )
        opened = read_bundle(path, check=False)
        self.path, self.manifest, self.kind = opened.path, opened.manifest, opened.manifest.target
        doc = self.manifest
        try:
            points, decoder = doc.points_at(resolution), doc.decoder_at(resolution)
        except BundleError as exc:
            raise GenerationError(f"{self.path}: {exc}") from None
        if decoder is None:
            raise GenerationError(f"{self.path} has no decode method, so it cannot make images")
        self.resolution = tuple(resolution or doc.resolution)
        self._resolution_arg = None if resolution is None else f"{resolution[0]}x{resolution[1]}"
        self.steps, self.guidance = int(doc.scheduler["steps"]), float(doc.scheduler["guidance_scale"])
        self.shift = float(doc.scheduler["shift"])
        self._entries = {p.name: p for p in points}
        self.points = [PointInfo(p.name, p.gflops, p.compression_ratio, p.depth) for p in points]
        self.default_point = doc.default_operating_point or self.points[0].name
        self.named_schedules = dict(doc.schedules)
        self.app = opened.target.app_runner(self.path, runner)
        self.threads = threads
        self.timings: dict[str, Any] | None = None

    def available(self) -> dict[str, list[tuple[int, int]]]:
        return self.manifest.point_resolutions()

    def generate(
        self, prompt, op=None, steps=None, guidance=None, seed=0, on_step: StepCallback | None = None, initial=None
    ):
        from PIL import Image

        schedule = op if isinstance(op, Schedule) else None  # generate_image hands over the checked schedule
        if schedule is not None and schedule.single is not None:
            schedule, op = None, schedule.single
        point = self.point(op) if schedule is None else self.point(schedule.points[0])
        steps, guidance = self.settings(steps, guidance)
        shape = [1, *self._entries[point.name].input("latent").shape[1:]]
        with tempfile.TemporaryDirectory(prefix="elasticdit-app-") as tmp:
            out = Path(tmp) / "image.png"
            doc = self.app.generate(
                self.path,
                prompt,
                noise_for(seed, shape).numpy() if initial is None else np.asarray(initial, dtype=np.float32),
                out,
                op=point.name if schedule is None else None,
                schedule=None if schedule is None else runner_schedule(schedule, self.named_schedules),
                steps=steps,
                guidance=guidance,
                threads=self.threads,
                warm_load=False,
                resolution=self._resolution_arg,
            )
            with Image.open(out) as image:
                pixels = np.asarray(image.convert("RGB"))
        self.timings = doc
        if on_step is not None:
            for i, step in enumerate(doc["runs"][-1]["steps"]):
                on_step(i, float(step["sigma"]))
        return pixels
