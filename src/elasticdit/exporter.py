"""`export`: checkpoint -> operating points -> lowered programs -> the target's artifacts -> manifest, written
atomically (docs/design.md, "Data flow")."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__
from .bundle.manifest import Manifest, MethodEntry, PointEntry, TextEncoderEntry
from .bundle.tokenizers import sd3_tokenizer
from .bundle.writer import BundleWriter
from .checkpoint import Checkpoint, load_checkpoint
from .chunking import ChunkPlan, chain_entries, chunked_units, plan_chunks
from .errors import DenseAttentionError, ExportError, PhoneLimitError
from .footprint import Footprint, PhoneLimits, WeightStorage, over_limits, point_key, weight_plan
from .inspection import count_cost, ssba_stats
from .lowering import lower
from .operating_points import OperatingPoint, full_point, operating_points, select
from .progress import reporter
from .quiet import silence_library_noise
from .recipes import Recipe, load_recipe, packaged_recipes
from .schedules import Schedule, check, parse_named_all
from .slicing import ExportUnit, export_units
from .specs import MethodKind
from .ssba.lowering import lowering_names
from .targets import TARGETS, Artifact, Target, get_target


@dataclass
class ExportRequest:
    checkpoint: Path
    target: str
    output: Path
    recipe: str | None = None
    ops: list[str] | None = None
    resolution: tuple[int, int] | None = None
    resolutions: list[tuple[int, int]] | None = None  # several, the first the default (wins over `resolution`)
    cfg_batch: bool = False
    weights: str = "inline"  # "inline" | "external" (a target's `weights_forms`)
    force: bool = False
    progress: bool | None = None
    schedules: list[str] = field(default_factory=list)  # NAME=SPEC, recorded in the manifest for apps
    limits: PhoneLimits | None = None  # the target's phone limits unless given (tests pass small ones)


def check_phone_limits(
    target: Target,
    recipe: Recipe,
    cfg: Any,
    points: list[OperatingPoint],
    resolutions: list[tuple[int, int]],
    limits: PhoneLimits,
) -> tuple[Footprint, ChunkPlan | None]:
    """The recipe's planned footprint and, when its weights break the target's limits and the target chunks the
    transformer, the block ranges whose packages keep under them (`chunking.plan_chunks`); or a `PhoneLimitError`
    (before any work) naming what breaks the limits and the packaged recipes of this target that would fit."""
    plan = weight_plan(cfg, points, resolutions)

    def fitting(storage: WeightStorage) -> tuple[list[str], ChunkPlan | str | None]:
        """(what breaks the limits unchunked, the chunk plan or why there is none; None when it fits whole)."""
        fp = plan.footprint(storage)
        problems = over_limits(fp, limits)
        if not problems:
            return problems, None
        if not target.chunks_transformer:
            return problems, f"{target.name} bundles are not split into block-range packages"
        big = [n for n, b in fp.others.items() if limits.function_bytes is not None and b > limits.function_bytes]
        if big:
            return problems, f"{', '.join(big)} alone is over the {limits.function_rule} limit"
        return problems, plan_chunks(cfg, points, resolutions, plan, storage, limits)

    fp = plan.footprint(target.weight_storage(recipe))
    problems, chunks = fitting(target.weight_storage(recipe))
    if chunks is None or isinstance(chunks, ChunkPlan):
        return fp, chunks
    fit = []
    for name, path in packaged_recipes().items():
        if path.parent.parent.name != target.name or name == recipe.name:
            continue
        other = load_recipe(name, target, TARGETS)
        if not isinstance(fitting(target.weight_storage(other))[1], str):
            fit.append(other.name)
    hint = (
        f"recipes that fit: {', '.join(fit)}"
        if fit
        else f"no {target.name} recipe fits these operating points: export fewer or lighter ones (--ops)"
    )
    raise PhoneLimitError(
        f"recipe {recipe.name} would put {'; '.join(problems)}, and split into block-range packages {chunks}; {hint}"
    )


def phone_limits_report(
    target_name: str,
    recipe_name: str,
    cfg: Any,
    resolution: tuple[int, int],
    limits: PhoneLimits | None = None,
) -> dict[str, Any]:
    """`inspect`'s view of the phone limits for every point at one resolution: whether the recipe fits, and the
    block-range packages it would be chunked into (file, blocks [lo, hi), planned bytes) or the refusal."""
    from .chunking import package_file

    target = get_target(target_name)
    recipe = load_recipe(recipe_name, target, TARGETS)
    try:
        _, chunks = check_phone_limits(
            target, recipe, cfg, operating_points(cfg), [resolution], limits or target.limits
        )
    except PhoneLimitError as exc:
        return {"fits": False, "error": str(exc), "chunks": None}
    if chunks is None:
        return {"fits": True, "chunks": None}
    sizes = zip(chunks.ranges, chunks.file_bytes, chunks.function_bytes, strict=True)
    pieces = [
        {"file": package_file(k), "blocks": [lo, hi], "weight_file_bytes": f, "largest_function_bytes": b}
        for k, ((lo, hi), f, b) in enumerate(sizes)
    ]
    return {"fits": True, "chunks": pieces}


def point_entry(ck: Checkpoint, unit: ExportUnit) -> PointEntry:
    """A denoise method's manifest entry, its cost counted on the float module (batch 1); the file and the
    signature are the artifact's (`with_artifact`)."""
    point, resolution = unit.point, unit.resolution
    assert point is not None and resolution is not None
    stats = ssba_stats(ck.cfg, point, resolution)
    _, gflops = count_cost(unit.module, tuple(t[:1] for t in unit.example_inputs))
    return PointEntry(
        method=unit.method,
        file="",
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
        resolution=resolution,
    )


def text_tokenizer(ck: Checkpoint, units: list[ExportUnit]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """encode_text's tokenizer for the manifest and the bundle files it names (docs/design.md, "Manifest")."""
    cfg = ck.cfg
    if not any(u.kind == MethodKind.ENCODE_TEXT for u in units):
        return None, {}
    if cfg.text_encoders is not None:
        return sd3_tokenizer(cfg.text_encoders, ck.files, with_t5=cfg.text_encoders.t5 is not None)
    te = cfg.text_encoder
    assert te is not None
    return {"kind": "words", "vocab": list(te.vocab), "length": cfg.transformer.text_len}, {}


def build_manifest(
    req: ExportRequest,
    ck: Checkpoint,
    recipe: Recipe,
    resolutions: list[tuple[int, int]],
    points: list[OperatingPoint],
    entries: list[PointEntry],
    units: list[ExportUnit],
    artifacts: list[Artifact],
    tokenizer: dict[str, Any] | None = None,
    schedules: dict[str, Schedule] | None = None,
    other_weights: dict[str, int] | None = None,
) -> Manifest:
    """`other_weights`: decode's and encode_text's planned resident weight bytes (`Footprint.others`)."""
    cfg = ck.cfg
    resolution = resolutions[0]
    by_method = {a.method: a for a in artifacts}

    def entry(unit: ExportUnit) -> dict[str, Any]:
        a = by_method[unit.method]
        doc = {
            "kind": unit.kind,
            "method": unit.method,
            "file": a.file,
            "data_file": a.data_file,
            "inputs": a.inputs,
            "outputs": a.outputs,
            "weight_bytes": (other_weights or {}).get(unit.kind),
            "arena_bytes": a.arena_bytes,
        }
        return doc if unit.kind == MethodKind.ENCODE_TEXT else {**doc, "resolution": unit.resolution}

    decoders = [MethodEntry(**entry(u)) for u in units if u.kind == MethodKind.DECODE]
    text_encoder = next((entry(u) for u in units if u.kind == MethodKind.ENCODE_TEXT), None)
    return Manifest(
        target=req.target,
        tool_version=__version__,
        checkpoint_sha256=ck.sha256,
        recipe=recipe,
        resolution=resolution,
        resolutions=list(resolutions),
        scheduler={
            "kind": cfg.scheduler.kind,
            "shift": cfg.scheduler.shift,
            "steps": cfg.scheduler.steps,
            "guidance_scale": cfg.scheduler.guidance_scale,
        },
        latent={
            "channels": cfg.transformer.in_channels,
            "size": list(cfg.latent_size(resolution)),
            "scaling_factor": cfg.vae.scaling_factor if cfg.vae else 1.0,
            "shift_factor": cfg.vae.shift_factor if cfg.vae else 0.0,
        },
        cfg_batch=req.cfg_batch,
        default_operating_point=full_point(cfg).name if full_point(cfg) in points else points[0].name,
        operating_points=[
            replace(
                e, file=a.file, data_file=a.data_file, inputs=a.inputs, outputs=a.outputs, arena_bytes=a.arena_bytes
            )
            if (a := by_method.get(e.method)) is not None
            else chain_entries(e, units, by_method)  # a chunked point: its pieces' functions, chained
            for e in entries
        ],
        decoder=decoders[0] if decoders else None,
        decoders=decoders[1:],
        text_encoder=(
            TextEncoderEntry(
                **{k: v for k, v in text_encoder.items() if k != "kind"},
                tokenizer=tokenizer,
            )
            if text_encoder
            else None
        ),
        backend_report={a.method: a.report for a in artifacts},
        runtime_ops=get_target(req.target).runtime_ops(artifacts),
        schedules=dict(schedules or {}),
    )


def check_resolutions(ck: Checkpoint, resolutions: list[tuple[int, int]]) -> None:
    """Each resolution suits the model (`check_resolution`: the grid rules, SD3's position table), none twice."""
    from .config import check_resolution

    seen: set[tuple[int, int]] = set()
    for h, w in resolutions:
        if (h, w) in seen:
            raise ExportError(f"resolution {h}x{w} is given twice")
        seen.add((h, w))
        check_resolution(ck.cfg, (h, w))


def refuse_dense_on_ssba(
    ck: Checkpoint, recipe: Recipe, points: list[OperatingPoint], resolution: tuple[int, int]
) -> None:
    """`lowering.attention = "dense"` is only a lowering where no SSBA mask removes anything."""
    if recipe.attention != "dense":
        return
    masked = [p.name for p in points if (s := ssba_stats(ck.cfg, p, resolution)) and s.joint_sparsity > 0]
    if masked:
        raise DenseAttentionError(
            f"recipe '{recipe.name}' lowers attention as 'dense', but the checkpoint's SSBA masks "
            f"{', '.join(masked)}: dense attention is another function; choose {', '.join(lowering_names()[1:])}"
        )


def checked_schedules(
    texts: list[str], ck: Checkpoint, points: list[OperatingPoint], resolutions: list[tuple[int, int]]
) -> dict[str, Schedule]:
    """`--schedule NAME=SPEC`s checked before anything is written: points of the model, exported in this bundle
    (every point is exported at every resolution, so a schedule runs at each; named `ScheduleError`s)."""
    named = parse_named_all(texts)
    held = {p.name: list(resolutions) for p in points}
    space = [p.name for p in operating_points(ck.cfg)]
    for schedule in named.values():
        check(schedule, held, None, space, where="the bundle (--ops)")
    return named


def export_bundle(req: ExportRequest) -> dict[str, Any]:
    """Write the bundle; returns a summary (bundle path, files, per-operating-point status)."""
    silence_library_noise()
    target = get_target(req.target)
    if req.weights not in target.weights_forms:
        raise ExportError(
            f"--weights {req.weights} is not offered for {req.target} bundles; "
            f"choose {' or '.join(target.weights_forms)}"
        )
    recipe = load_recipe(req.recipe, target, TARGETS)
    resolutions = list(req.resolutions or ([req.resolution] if req.resolution else []))
    ck = load_checkpoint(req.checkpoint, resolutions[0] if resolutions else None)
    ck.release_pages()  # the finite check read every weight; each stage reads back only what it uses
    resolutions = resolutions or [ck.cfg.resolution]
    check_resolutions(ck, resolutions)
    points = select(ck.cfg, req.ops or list(recipe.operating_points))
    for resolution in resolutions:
        refuse_dense_on_ssba(ck, recipe, points, resolution)
    limits = req.limits if req.limits is not None else target.limits
    planned, chunks = check_phone_limits(target, recipe, ck.cfg, points, resolutions, limits)  # before any work
    schedules = checked_schedules(req.schedules, ck, points, resolutions)
    models = ck.models()
    batch = 2 if req.cfg_batch else 1
    units = export_units(models, points, resolutions, recipe.attention, batch)  # float: the costs are counted on them

    with BundleWriter(req.output, req.force) as writer, reporter(len(units) + 2, req.progress) as report:
        default = resolutions[0]
        entries = [  # costs counted before lowering (lowering.py, "Order")
            replace(point_entry(ck, u), weight_bytes=planned.points[point_key(u.point.name, u.resolution, default)])
            for u in units
            if u.kind == MethodKind.DENOISE and u.point is not None and u.resolution is not None
        ]
        if chunks is not None:  # each denoise unit as its pieces, one per block range it has a function in
            units = chunked_units(models, units, chunks, recipe.attention)
        lowered = lower(models, units, recipe, target.formulation, report, ck.release_pages)
        ck.release_pages()  # a quantizing recipe no longer reads the float weights it replaced
        artifacts = target.write(lowered, recipe, writer.root, report, weights=req.weights, release=ck.release_pages)
        report.stage("writing the manifest")
        tokenizer, tokenizer_files = text_tokenizer(ck, units)
        for rel, text in tokenizer_files.items():
            writer.path(rel).parent.mkdir(parents=True, exist_ok=True)
            writer.path(rel).write_text(text, encoding="utf-8")
        manifest = build_manifest(
            req, ck, recipe, resolutions, points, entries, units, artifacts, tokenizer, schedules, planned.others
        )
        written = writer.finish(manifest.to_dict())
        report.advance()
    summary = {
        "bundle": str(Path(req.output).absolute()),
        "target": req.target,
        "recipe": recipe.name,
        "files": written["files"],
        "bytes": sum(f["bytes"] for f in written["files"]),
        "operating_points": [{"name": p.name, "method": p.method, "status": "ok"} for p in manifest.operating_points],
        "methods": sorted(a.method for a in artifacts),
        "backend_report": written["backend_report"],
    }
    if schedules:
        summary["schedules"] = {name: s.spec for name, s in schedules.items()}
    return summary
