"""`verify`: a bundle's hashes, structure, and every method's numerics against a reference of its own numerics.

Each method runs on this host (the target's `host_runner`) at several noise levels and is compared with
`Target.reference` (the quantized model itself for a quantized recipe; the float32 PyTorch reference otherwise) at
a tight relative-error limit, so a wrong lowering, a dropped block or perturbed weights fail under every recipe;
the SNR against the float32 reference is reported beside it, and held to the recipe's floor for quantized
methods (`min_snr_db`) and for float methods computed in float16 (`float16_min_snr_db`: a same-numerics
reference overflows exactly as the artifact does, so only the float32 comparison sees an fp16 overflow). The
limits and the reference numerics come from this tool's own recipe of the bundle's recipe name, never from the
bundle's manifest: a difference between the two is reported (docs/design.md, "verify").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .bundle.manifest import Manifest, MethodEntry, PointEntry
from .bundle.reader import read_bundle
from .checkpoint import load_checkpoint
from .errors import BundleError, CheckpointError
from .model.pipeline import Models
from .operating_points import select
from .quant import applies
from .recipes import Recipe, packaged_recipes
from .slicing import ExportUnit, decode_unit, denoise_unit, encode_text_unit
from .specs import MethodKind, example_inputs
from .targets import Target, target_recipe

DEFAULT_MAX_REL_ERROR = 1e-4  # a float32 method against the float32 reference
DEFAULT_QUANTIZED_MAX_REL_ERROR = 2e-3  # a quantized method against the quantized model itself
DEFAULT_MIN_SNR_DB = 30.0  # a quantized method against float32
DEFAULT_FLOAT16_MIN_SNR_DB = 40.0  # a float method of an fp16-compute recipe against float32
NOISE_LEVELS = (0.98, 0.5, 0.02)  # sigma of the denoise inputs: almost pure noise, half way, almost clean
PROMPT = "two red circles above a blue square"


@dataclass
class Level:
    sigma: float | None
    rel_err: float
    snr_db: float

    @classmethod
    def of(cls, sigma: float | None, out: list, ref: list, fp32: list) -> Level:
        """Outputs at one noise level: the worst relative error against `ref`, the worst SNR against `fp32`."""
        return cls(
            sigma,
            max(rel_err(o, r) for o, r in zip(out, ref, strict=True)),
            min(snr_db(o, r) for o, r in zip(out, fp32, strict=True)),
        )


@dataclass
class MethodCheck:
    method: str
    kind: str
    reference: str  # what the outputs were compared with (the same numerics as the artifact)
    metric: str  # "rel_err": relative error against `reference`, the worst over the noise levels
    value: float
    limit: float
    snr_db: float  # against the float32 reference, the worst over the noise levels
    min_snr_db: float | None  # the floor `snr_db` is held to (quantized or fp16-compute methods); None: not held
    passed: bool
    levels: list[Level] = field(default_factory=list)
    note: str = ""
    # the recipe's attention lowering in float32 against masked attention, the worst over the levels (held to
    # max_rel_error); None for a method without one (masked attention, decode, encode_text)
    lowering_rel_err: float | None = None


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """inf where either side has inf/NaN entries: a NaN would fail no comparison and hide the worst level."""
    if not _finite(out, ref):
        return math.inf
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


def snr_db(out: torch.Tensor, ref: torch.Tensor) -> float:
    """-inf where either side has inf/NaN entries, so an overflow is the worst level, never a NaN `min` may skip."""
    if not _finite(out, ref):
        return -math.inf
    noise = float((out.double() - ref.double()).norm())
    return math.inf if noise == 0 else 20 * math.log10(float(ref.double().norm()) / noise)


def verification_inputs(models: Models, entry: MethodEntry, seed: int = 7) -> list[tuple[float | None, list]]:
    """(sigma, inputs) pairs of the manifest's shapes. Denoise: a latent at each of NOISE_LEVELS,
    (1 - sigma) * x0 + sigma * noise with that timestep, and real text embeddings when a text encoder exists;
    the other methods: one seeded draw."""
    base = list(example_inputs(entry.inputs, seed))
    if entry.kind != MethodKind.DENOISE:
        return [(None, base)]
    if models.text_encoder is not None:
        batch = base[0].shape[0]
        with torch.no_grad():
            text, pooled = models.encode_prompt(PROMPT)
        base[2], base[3] = text.expand(batch, -1, -1).contiguous(), pooled.expand(batch, -1).contiguous()
    g = torch.Generator().manual_seed(seed + 1)
    clean, noise = torch.randn(base[0].shape, generator=g), torch.randn(base[0].shape, generator=g)
    levels = []
    for sigma in NOISE_LEVELS:
        latent = (1 - sigma) * clean + sigma * noise
        levels.append((sigma, [latent, torch.full_like(base[1], sigma), *base[2:]]))
    return levels


def reference_unit(models: Models, entry: MethodEntry, manifest: Manifest, attention: str = "masked") -> ExportUnit:
    """The method sliced from the checkpoint with the reference attention (`masked`, or the lowering named) at its
    own resolution; a denoise method's blocks are the checkpoint's for that point name, not the manifest's."""
    default = tuple(manifest.resolution)
    resolution = tuple(entry.resolution or default)
    if isinstance(entry, PointEntry):
        (point,) = select(models.cfg, [entry.name])
        return denoise_unit(models, point, resolution, attention, entry.batch, default)
    if entry.kind == MethodKind.DECODE:
        return decode_unit(models, resolution, default)
    return encode_text_unit(models)


def _run(module: torch.nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module(*inputs)
    return list(out) if isinstance(out, tuple | list) else [out]


def resolve_checkpoint(manifest: Manifest, checkpoint: Path | None) -> Path:
    from .bundle.files import sha256_file
    from .demo_checkpoint import demo_checkpoint_path

    if checkpoint is not None:
        return checkpoint
    demo = demo_checkpoint_path()
    if sha256_file(demo) == manifest.checkpoint_sha256:
        return demo
    raise CheckpointError("the bundle was not exported from the demo checkpoint; pass --checkpoint CKPT")


def _differences(ours: dict[str, Any], theirs: dict[str, Any], where: str = "") -> list[str]:
    out = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        name = f"{where}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: this tool's recipe has {a!r}, the bundle's manifest {b!r}")
    return out


def tool_recipe(manifest: Manifest) -> tuple[Recipe, list[str]]:
    """This tool's recipe of the bundle's recipe name (its limits and numerics are what `verify` uses) and how the
    manifest's copy differs from it. A recipe the tool does not ship (a .toml the export was given) is taken from
    the manifest with its limits no looser than the defaults."""
    bundled = manifest.recipe
    if bundled.name in packaged_recipes():
        ours = target_recipe(bundled.name, manifest.target)
        return ours, _differences(dict(ours.raw), dict(bundled.raw))
    note = f"recipe '{bundled.name}' is not one of this tool's: the manifest's copy, limits no looser than the defaults"

    def tighter(value: float | None, default: float, lower_is_tighter: bool) -> float:
        if value is None:
            return default
        return min(value, default) if lower_is_tighter else max(value, default)

    return replace(
        bundled,
        max_rel_error=tighter(bundled.max_rel_error, DEFAULT_MAX_REL_ERROR, True),
        quantized_max_rel_error=tighter(bundled.quantized_max_rel_error, DEFAULT_QUANTIZED_MAX_REL_ERROR, True),
        min_snr_db=tighter(bundled.min_snr_db, DEFAULT_MIN_SNR_DB, False),
        float16_min_snr_db=tighter(bundled.float16_min_snr_db, DEFAULT_FLOAT16_MIN_SNR_DB, False),
    ), [note]


def float32_limit(recipe: Recipe) -> float:
    """The relative-error limit of a float32 comparison (a float method, the recipe's lowering vs masked)."""
    return float(recipe.max_rel_error if recipe.max_rel_error is not None else DEFAULT_MAX_REL_ERROR)


def limits(recipe: Recipe, kind: MethodKind) -> tuple[float, float | None]:
    """(relative-error limit against the same-numerics reference, SNR floor against float32 or None): quantized
    methods `min_snr_db`; float methods of an fp16-compute recipe `float16_min_snr_db`; float32 methods none."""
    if applies(recipe.quantization, kind):
        rel = recipe.quantized_max_rel_error
        floor = recipe.min_snr_db if recipe.min_snr_db is not None else DEFAULT_MIN_SNR_DB
        return float(rel if rel is not None else DEFAULT_QUANTIZED_MAX_REL_ERROR), float(floor)
    rel = float32_limit(recipe)
    if recipe.precision == "fp16":
        fp16 = recipe.float16_min_snr_db
        return rel, float(fp16 if fp16 is not None else DEFAULT_FLOAT16_MIN_SNR_DB)
    return rel, None


def _levels(
    runner: Any, unit: ExportUnit, lowered: ExportUnit | None, same: Any, entry: MethodEntry, draws: list
) -> tuple[list[Level], float | None]:
    """Each draw's level, and the worst relative error of the recipe's lowering (`lowered`, float32 PyTorch)
    against `unit` (masked attention), None without a lowering to check."""
    levels = []
    lowering: float | None = None if lowered is None else 0.0
    for sigma, inputs in draws:
        out = runner.run(entry, inputs)
        for o, spec in zip(out, entry.outputs, strict=True):
            if list(o.shape) != list(spec.shape):
                raise BundleError(
                    f"{entry.method} returned {spec.name} of shape {list(o.shape)}, manifest says {spec.shape}"
                )
        fp32 = _run(unit.module, inputs)
        if lowered is not None:
            worst = max(rel_err(o, r) for o, r in zip(_run(lowered.module, inputs), fp32, strict=True))
            lowering = max(lowering or 0.0, worst)
        levels.append(Level.of(sigma, out, same.run(inputs) if same is not None else fp32, fp32))
    return levels, lowering


def check_method(
    target: Target, runner: Any, models: Models, recipe: Recipe, manifest: Manifest, entry: MethodEntry
) -> MethodCheck:
    unit = reference_unit(models, entry, manifest)
    # a same-numerics reference rebuilt with the recipe's own lowering shares that lowering's code, so the lowering
    # is checked on its own: in float32 against masked attention
    checked = isinstance(entry, PointEntry) and recipe.attention != "masked"
    lowered = reference_unit(models, entry, manifest, recipe.attention) if checked else None
    same = target.reference(models, recipe, unit)
    note = ""
    if isinstance(entry, PointEntry) and tuple(entry.blocks) != unit.point.blocks:
        note = f"the manifest lists blocks {entry.blocks}, the checkpoint's {entry.name} has {list(unit.point.blocks)}"
    try:
        levels, lowering = _levels(runner, unit, lowered, same, entry, verification_inputs(models, entry))
    finally:
        if same is not None:
            same.close()
    note = note or runner.note(entry)  # after the run: what it ran (e.g. the weight tensors found) is known
    limit, floor = limits(recipe, entry.kind)
    lowering_limit = float32_limit(recipe)
    lowering_ok = lowering is None or lowering <= lowering_limit
    if not lowering_ok:
        note = (
            f"the recipe's '{recipe.attention}' attention differs from masked attention by {lowering:.2e} "
            f"in float32 (limit {lowering_limit:g})"
        )
    value = max(level.rel_err for level in levels)
    snr = min(level.snr_db for level in levels)
    passed = (
        value <= limit and (floor is None or snr >= floor) and lowering_ok and not note.startswith("the manifest lists")
    )
    return MethodCheck(
        entry.method,
        str(entry.kind),
        same.name if same is not None else "float32 (PyTorch)",
        "rel_err",
        value,
        limit,
        snr,
        floor,
        passed,
        levels,
        note,
        lowering,
    )


def piece_inputs(pieces: dict[str, ExportUnit], entry: PointEntry, inputs: list) -> dict[str, list]:
    """Each piece's inputs (by function) when the checkpoint's float32 `pieces` (by function) are chained on the
    point's inputs."""
    from .chunking import run_chain

    given: dict[str, list] = {}

    def float32(piece: Any, values: list[torch.Tensor]) -> list[torch.Tensor]:
        given[piece.function] = values
        return _run(pieces[piece.function].module, values)

    run_chain(entry, inputs, float32)
    return given


def check_pieces(
    target: Target, runner: Any, models: Models, recipe: Recipe, manifest: Manifest, entry: PointEntry
) -> list[MethodCheck]:
    """Each piece of a chunked point on its own (`run_piece`), against the piece's same-numerics reference, on the
    inputs the float32 pieces chained give it at each noise level (the chained point is `check_method`'s)."""
    from .chunking import rebuilt_piece_unit

    unit = reference_unit(models, entry, manifest)
    lowered = reference_unit(models, entry, manifest, recipe.attention)
    float32 = {chunk.function: rebuilt_piece_unit(models, unit, chunk, "masked") for chunk in entry.chunks}
    draws = [(sigma, piece_inputs(float32, entry, inputs)) for sigma, inputs in verification_inputs(models, entry)]
    limit, floor = limits(recipe, entry.kind)
    checks = []
    for chunk in entry.chunks:
        fp32 = float32[chunk.function]
        piece = rebuilt_piece_unit(models, lowered, chunk, recipe.attention)
        same = target.reference(models, recipe, fp32)
        levels = []
        try:
            for sigma, given in draws:
                values = given[chunk.function]
                out = runner.run_piece(entry, chunk, piece, values)
                exact = _run(fp32.module, values)
                levels.append(Level.of(sigma, out, same.run(values) if same is not None else exact, exact))
        finally:
            if same is not None:
                same.close()
        value, snr = max(lv.rel_err for lv in levels), min(lv.snr_db for lv in levels)
        checks.append(
            MethodCheck(
                chunk.function,
                f"{entry.kind} piece",
                same.name if same is not None else "float32 (PyTorch)",
                "rel_err",
                value,
                limit,
                snr,
                floor,
                value <= limit and (floor is None or snr >= floor),
                levels,
                f"blocks {chunk.blocks} of {entry.method} in {chunk.file}",
            )
        )
    return checks


def verify_bundle(bundle: str | Path, checkpoint: Path | None = None, threads: int | None = None) -> dict[str, Any]:
    opened = read_bundle(bundle, check=False)
    manifest = opened.manifest
    files = opened.check_files()
    ck = load_checkpoint(resolve_checkpoint(manifest, checkpoint), tuple(manifest.resolution))
    if ck.sha256 != manifest.checkpoint_sha256:
        raise CheckpointError(
            f"{ck.path} (sha256 {ck.sha256[:12]}) is not the checkpoint this bundle was exported from "
            f"({manifest.checkpoint_sha256[:12]})"
        )
    recipe, differences = tool_recipe(manifest)
    models = ck.models()
    target = opened.target
    runner = target.host_runner(opened.path, manifest, threads, models)
    checks = []
    for entry in manifest.methods():
        checks.append(check_method(target, runner, models, recipe, manifest, entry))
        if isinstance(entry, PointEntry) and entry.chunks:
            checks += check_pieces(target, runner, models, recipe, manifest, entry)
    return {
        "bundle": str(opened.path),
        "target": manifest.target,
        "recipe": manifest.recipe.name,
        "recipe_differences": differences,
        "noise_levels": list(NOISE_LEVELS),
        "files": files,
        "methods": [asdict(c) for c in checks],
        "passed": all(c.passed for c in checks),
    }
