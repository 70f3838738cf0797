"""`export`: checkpoint -> sliced static units -> a target's artifact -> manifest, written atomically."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .bundle import BundleWriter
from .checkpoint import Checkpoint, load_checkpoint
from .errors import ExportError
from .inspection import count_cost, ssba_stats
from .manifest import MethodEntry, PointEntry, build_manifest
from .operating_points import OperatingPoint, full_point, select
from .progress import reporter
from .recipes import Recipe, load_recipe
from .slicing import ExportUnit, export_units


@dataclass
class ExportRequest:
    checkpoint: Path
    target: str
    output: Path
    recipe: str | None = None
    ops: list[str] | None = None
    resolution: tuple[int, int] | None = None
    cfg_batch: bool = False
    force: bool = False
    progress: bool | None = None


def _writer_for(target: str):
    if target == "android":
        from .targets.android import write_android

        return write_android
    if target == "ios":
        from .targets.ios import write_ios

        return write_ios
    if target == "onnx":
        from .targets.onnx import write_onnx

        return write_onnx
    raise ExportError(f"unknown target '{target}'; choose android, ios or onnx")


def _point_entry(ck: Checkpoint, unit: ExportUnit, resolution: tuple[int, int], file: str) -> PointEntry:
    point = unit.point
    assert point is not None
    stats = ssba_stats(ck.cfg, point, resolution)
    _, gflops = count_cost(unit.module, tuple(t[:1] for t in unit.example_inputs))
    return PointEntry(
        method=unit.method,
        file=file,
        inputs=unit.inputs,
        outputs=unit.outputs,
        name=point.name,
        compression_ratio=point.ratio,
        depth=point.depth,
        blocks=list(point.blocks),
        tokens=unit.module.grid[0] * unit.module.grid[1],
        gflops=round(gflops, 6),
        ssba_sparsity=round(stats.joint_sparsity, 6) if stats else 0.0,
        ssba_image_sparsity=round(stats.image_sparsity, 6) if stats else 0.0,
    )


def export_bundle(req: ExportRequest) -> dict[str, Any]:
    """Write the bundle; returns a summary (bundle path, files, per-operating-point status)."""
    writer_fn = _writer_for(req.target)
    recipe: Recipe = load_recipe(req.recipe, req.target)
    ck = load_checkpoint(req.checkpoint, req.resolution)
    cfg = ck.cfg
    resolution = req.resolution or cfg.resolution
    points: list[OperatingPoint] = select(cfg, req.ops or list(recipe.operating_points))
    models = ck.models()
    batch = 2 if req.cfg_batch else 1
    units = export_units(models, points, resolution, recipe.attention, batch)
    calibration = functools.partial(_calibration, models, resolution, recipe, batch)
    with BundleWriter(req.output, req.force) as writer, reporter(len(units) + 2, req.progress) as report:
        entries = [_point_entry(ck, u, resolution, "") for u in units if u.kind == "denoise"]
        methods = writer_fn(units, models, recipe, writer.root, report, calibration)
        report.stage("writing the manifest")
        for unit in units:  # a target may take other dtypes than the units (Core ML: int32 token ids)
            unit.inputs = methods[unit.method].get("inputs", unit.inputs)
            unit.outputs = methods[unit.method].get("outputs", unit.outputs)
        for entry in entries:
            entry.file = methods[entry.method]["file"]
            entry.inputs = methods[entry.method].get("inputs", entry.inputs)
            entry.outputs = methods[entry.method].get("outputs", entry.outputs)
        by_kind = {u.kind: u for u in units}

        def method(kind: str) -> MethodEntry | None:
            unit = by_kind.get(kind)
            if unit is None:
                return None
            return MethodEntry(unit.method, methods[unit.method]["file"], unit.inputs, unit.outputs)

        te = cfg.text_encoder
        manifest = build_manifest(
            target=req.target,
            checkpoint_sha256=ck.sha256,
            recipe=recipe.to_manifest(),
            resolution=resolution,
            scheduler={
                "kind": cfg.scheduler.kind,
                "shift": cfg.scheduler.shift,
                "steps": cfg.scheduler.steps,
                "guidance_scale": cfg.scheduler.guidance_scale,
            },
            points=entries,
            decoder=method("decode"),
            text_encoder=method("encode_text"),
            latent={
                "channels": cfg.transformer.in_channels,
                "size": list(cfg.latent_size(resolution)),
                "scaling_factor": cfg.vae.scaling_factor if cfg.vae else 1.0,
                "shift_factor": cfg.vae.shift_factor if cfg.vae else 0.0,
            },
            tokenizer={"kind": "words", "vocab": list(te.vocab), "length": cfg.transformer.text_len} if te else None,
            default_point=full_point(cfg).name if full_point(cfg) in points else points[0].name,
            cfg_batch=req.cfg_batch,
            tool_version=__version__,
        )
        manifest["backend_report"] = {m: info.get("delegation") or info.get("report") for m, info in methods.items()}
        manifest = writer.finish(manifest)
        report.advance()
    return {
        "bundle": str(Path(req.output).absolute()),
        "target": req.target,
        "recipe": recipe.name,
        "files": manifest["files"],
        "bytes": sum(f["bytes"] for f in manifest["files"]),
        "operating_points": [{"name": e.name, "method": e.method, "status": "ok"} for e in entries],
        "methods": sorted(methods),
        "backend_report": manifest["backend_report"],
    }


def _calibration(models, resolution, recipe: Recipe, batch: int, unit: ExportUnit) -> list[tuple]:
    from .calibration import denoise_samples

    assert unit.point is not None
    return denoise_samples(models, unit.point, resolution, recipe.calibration_samples, batch)
