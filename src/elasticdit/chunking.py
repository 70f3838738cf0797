"""Chunking the transformer into consecutive block ranges, each a package under the phone limits (docs/design.md,
"Phone limits"): the plan (which block ranges, found on the meta device like footprint.py: no weights read) and the
pieces (one static module per operating point and range, sharing the model's parameters) whose chain on the host
equals the point's whole `StaticElasticDiT`.

A piece's signature is named tensors (the chain passes values by name): the first piece takes the denoise inputs
(latent, timestep, text, pooled) and returns img, txt, temb; a middle piece takes img, txt, temb and returns img
(and txt while a later piece runs a block); the last takes img (txt when it runs a block), temb (latent, timestep
when the model predicts samples) and returns velocity. Every point has a function in the first and the last
package; a middle package holds only the points that run a block in its range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import ModelConfig
from .footprint import PhoneLimits, Tensors, WeightPlan, WeightStorage, _bytes, _touched, size
from .model.elastic_dit import SIGMA_FLOOR, StaticElasticDiT, unpatchify
from .model.pipeline import Models, build_models
from .operating_points import OperatingPoint
from .specs import MethodKind, TensorSpec, example_inputs

DENOISE_INPUTS = ("latent", "timestep", "text", "pooled")


def package_file(index: int) -> str:
    """The file of block range `index` in a chunked bundle."""
    return f"model_part{index}.mlpackage"


def piece_method(method: str, index: int) -> str:
    """The function of a point's piece in range `index` (unique across the bundle's packages)."""
    return f"{method}_part{index}"


class DenoisePiece(nn.Module):
    """Blocks `blocks` (model indices, a run of the point's) of one operating point, with the embedders when it
    returns temb and norm_out / proj_out / unpatchify when it returns velocity; it shares `static`'s modules."""

    def __init__(self, static: StaticElasticDiT, blocks: list[int], inputs: list[str], outputs: list[str]):
        super().__init__()
        self.input_names, self.output_names = [role(n) for n in inputs], [role(n) for n in outputs]
        self.embeds, self.projects = "temb" in self.output_names, "velocity" in self.output_names
        self.text_out = "txt" in self.output_names  # False: the point's last block ends the text stream here
        self.blocks_run = tuple(blocks)
        positions = [static.point.blocks.index(b) for b in blocks]
        if self.embeds:
            self.patch_embed = static.patch_embed
            self.register_buffer("codes", static.codes, persistent=False)
            self.time_text_embed, self.context_embedder = static.time_text_embed, static.context_embedder
        self.blocks = nn.ModuleList(static.blocks[i] for i in positions)
        self.cores = nn.ModuleList(static.cores[i] for i in positions)
        image = static.image_cores
        self.image_cores = None if image is None else nn.ModuleList(image[i] for i in positions)
        if self.projects:
            self.norm_out, self.proj_out = static.norm_out, static.proj_out
            self.grid, self.cell, self.channels = static.grid, static.cell, static.channels
            self.predicts_sample = static.predicts_sample

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env = dict(zip(self.input_names, inputs, strict=True))
        if self.embeds:
            env["img"] = self.patch_embed(env["latent"]).flatten(2).transpose(1, 2) + self.codes
            env["temb"] = self.time_text_embed(env["timestep"], env["pooled"])
            env["txt"] = self.context_embedder(env["text"])
        img, txt, temb = env["img"], env.get("txt"), env["temb"]
        last = len(self.blocks) - 1
        for i, (block, core) in enumerate(zip(self.blocks, self.cores, strict=True)):
            core2 = None if self.image_cores is None else self.image_cores[i]
            img, txt = block(img, txt, temb, core, text_out=i < last or self.text_out, core2=core2)
        env["img"], env["txt"] = img, txt
        if self.projects:
            out = unpatchify(self.proj_out(self.norm_out(img, temb)), self.grid, self.cell, self.channels)
            if self.predicts_sample:
                sigma = env["timestep"].clamp(min=SIGMA_FLOOR).to(out.dtype).reshape(-1, 1, 1, 1)
                out = (env["latent"] - out) / sigma
            env["velocity"] = out
        outs = tuple(env[n] for n in self.output_names)
        return outs[0] if len(outs) == 1 else outs


@dataclass(frozen=True)
class PieceSpec:
    """One function of a chunked point: its range index, the point's blocks in it, and its signature's names."""

    index: int
    blocks: list[int]
    inputs: list[str]
    outputs: list[str]


def role(name: str) -> str:
    """What a piece's tensor is: `img3` (the image stream after range 3's piece) -> `img`; denoise inputs as named."""
    return name.rstrip("0123456789")


def point_pieces(point: OperatingPoint, ranges: list[tuple[int, int]], predicts_sample: bool) -> list[PieceSpec]:
    """The point's pieces over `ranges` (consecutive [lo, hi) block ranges covering the model, at least two).

    A piece's outputs carry its range index (`img1`: Core ML refuses a function whose input and output share a
    name), its inputs the names the earlier pieces gave."""
    inside = [[b for b in point.blocks if lo <= b < hi] for lo, hi in ranges]
    latest: dict[str, str] = {}
    pieces = []
    for k, blocks in enumerate(inside):
        first, last = k == 0, k == len(ranges) - 1
        if not (first or last or blocks):
            continue
        later = any(inside[k + 1 :])
        if first:
            inputs = list(DENOISE_INPUTS)
            outputs = ["img", *(["txt"] if later else []), "temb"]
        else:
            inputs = [latest["img"], *([latest["txt"]] if blocks else []), latest["temb"]]
            outputs = ["img", *(["txt"] if later else [])]
        if last:
            inputs += ["latent", "timestep"] if predicts_sample else []
            outputs = ["velocity"]
        else:
            outputs = [f"{n}{k}" for n in outputs]
            latest.update({role(n): n for n in outputs})
        pieces.append(PieceSpec(k, blocks, inputs, outputs))
    return pieces


def piece_specs(cfg: ModelConfig, names: list[str], point: OperatingPoint, resolution, batch: int) -> list[TensorSpec]:
    t = cfg.transformer
    lh, lw = cfg.latent_size(resolution)
    gh, gw = cfg.token_grid(point.ratio, resolution)
    shapes = {
        "latent": [batch, t.in_channels, lh, lw],
        "timestep": [batch],
        "text": [batch, t.text_len, t.text_dim],
        "pooled": [batch, t.pooled_dim],
        "img": [batch, gh * gw, t.hidden_size],
        "txt": [batch, t.text_len, t.hidden_size],
        "temb": [batch, t.hidden_size],
        "velocity": [batch, t.in_channels, lh, lw],
    }
    return [TensorSpec(n, shapes[role(n)]) for n in names]


def piece_module(models: Models, point: OperatingPoint, resolution, attention: str, piece: PieceSpec) -> DenoisePiece:
    static = models.transformer.operating_point(point, resolution, attention)
    return DenoisePiece(static, piece.blocks, piece.inputs, piece.outputs).eval()


def piece_unit(models: Models, unit: Any, piece: PieceSpec, attention: str) -> Any:
    """The ExportUnit of one piece of a denoise unit (its method `piece_method`, its package `chunk`)."""
    from .slicing import ExportUnit

    batch = unit.inputs[0].shape[0]
    inputs = piece_specs(models.cfg, piece.inputs, unit.point, unit.resolution, batch)
    return ExportUnit(
        method=piece_method(unit.method, piece.index),
        kind=MethodKind.DENOISE,
        module=piece_module(models, unit.point, unit.resolution, attention, piece),
        example_inputs=example_inputs(inputs),
        inputs=inputs,
        outputs=piece_specs(models.cfg, piece.outputs, unit.point, unit.resolution, batch),
        point=unit.point,
        resolution=unit.resolution,
        chunk=piece.index,
    )


@dataclass
class ChunkPlan:
    """Block ranges [lo, hi) covering the model and, per range, the planned bytes of its package's weight file
    and of its largest function (in the recipe's storage; decode / encode_text ride in the first package)."""

    ranges: list[tuple[int, int]]
    file_bytes: list[int]
    function_bytes: list[int]


def _meta_piece_tensors(
    models: Models, cfg: ModelConfig, point: OperatingPoint, resolution
) -> tuple[Tensors, Tensors, dict[int, Tensors]]:
    """The tensors of a point's head (embedders), tail (norm_out, proj_out) and each block, on the meta device."""
    static = models.transformer.operating_point(point, resolution, "dense").to("meta")

    def touched(blocks: list[int], inputs: list[str], outputs: list[str]) -> Tensors:
        piece = DenoisePiece(static, blocks, inputs, outputs)
        with torch.device("meta"):
            args = tuple(torch.zeros(s.shape) for s in piece_specs(cfg, inputs, point, resolution, 1))
        return _touched(piece, args)

    head = touched([], list(DENOISE_INPUTS), ["img0", "txt0", "temb0"])
    tail = touched([], ["img0", "temb0", "latent", "timestep"], ["velocity"])
    blocks = {b: touched([b], ["img0", "txt0", "temb0"], ["img1", "txt1"]) for b in point.blocks}
    return head, tail, blocks


def plan_chunks(
    cfg: ModelConfig,
    points: list[OperatingPoint],
    resolutions: list[tuple[int, int]],
    plan: WeightPlan,
    storage: WeightStorage,
    limits: PhoneLimits,
) -> ChunkPlan | str:
    """The fewest consecutive block ranges whose packages keep every function and weight file under `limits`,
    balanced so their largest function is as small as that count allows, or why none can (one phrase)."""
    models = build_models(cfg, "meta")
    per_point = [
        _meta_piece_tensors(models, cfg, p, r)
        for r in resolutions
        for p in points  # every point at every resolution has its functions in the ranges' packages
    ]
    others = sum(_bytes(t.values(), storage, False) for t in plan.others.values())  # float, in the first package
    n = cfg.transformer.num_blocks

    def bytes_of(lo: int, hi: int) -> tuple[int, int]:
        """(the package's weight file, its largest function) for blocks [lo, hi)."""
        every: Tensors = {}
        largest = 0
        for head, tail, blocks in per_point:
            found: Tensors = dict(head) if lo == 0 else {}
            for b in range(lo, hi):
                found.update(blocks.get(b, {}))
            if hi == n:
                found.update(tail)
            largest = max(largest, _bytes(found.values(), storage, True))
            every.update(found)
        return _bytes(every.values(), storage, True) + (others if lo == 0 else 0), largest

    def greedy(function_limit: int | None, file_limit: int | None) -> list[tuple[int, int]] | str:
        def fits(lo: int, hi: int) -> bool:
            file, function = bytes_of(lo, hi)
            return (file_limit is None or file <= file_limit) and (function_limit is None or function <= function_limit)

        ranges, lo = [], 0
        while lo < n:
            hi = lo
            while hi < n and fits(lo, hi + 1):
                hi += 1
            if hi == lo:
                file, function = bytes_of(lo, lo + 1)
                where = "with the embedders" if lo == 0 else "with norm_out / proj_out" if lo == n - 1 else "alone"
                return f"block {lo} {where} already needs a {size(file)} package with a {size(function)} function"
            ranges.append((lo, hi))
            lo = hi
        return ranges

    found = greedy(limits.function_bytes, limits.weight_file_bytes)
    if isinstance(found, str):
        return found
    # balance: the same number of ranges under the smallest function limit that still allows it (bisected), so no
    # piece sits at the limit while another is nearly empty (the plan is an estimate of the converted bytes)
    low, high = 0, max(bytes_of(lo, hi)[1] for lo, hi in found)
    while high - low > max(1, high // 1000):
        mid = (low + high) // 2
        tried = greedy(mid, limits.weight_file_bytes)
        if isinstance(tried, str) or len(tried) > len(found):
            low = mid
        else:
            high, found = mid, tried
    sizes = [bytes_of(lo, hi) for lo, hi in found]
    return ChunkPlan(found, [s[0] for s in sizes], [s[1] for s in sizes])


def chunked_units(models: Models, units: list, chunks: ChunkPlan, attention: str) -> list:
    """`units` with each denoise unit replaced by its pieces (in range order; the other methods as they were)."""
    predicts = models.cfg.transformer.prediction == "sample"
    out = []
    for unit in units:
        if unit.kind != MethodKind.DENOISE:
            out.append(unit)
            continue
        out += [
            piece_unit(models, unit, piece, attention) for piece in point_pieces(unit.point, chunks.ranges, predicts)
        ]
    return out


def chain_entries(entry: Any, units: list, artifacts: dict[str, Any]) -> Any:
    """A chunked point's manifest entry: its pieces' functions in chain order (`PointEntry.chunks`); the entry's
    file is the first piece's, its inputs the first piece's and its outputs the last's."""
    from dataclasses import replace

    from .bundle.manifest import ChunkEntry

    pieces = [u for u in units if u.chunk is not None and u.method == piece_method(entry.method, u.chunk)]
    chain = []
    for unit in pieces:
        a = artifacts[unit.method]
        blocks = list(unit.module.blocks_run)
        chain.append(ChunkEntry(file=a.file, function=a.method, blocks=blocks, inputs=a.inputs, outputs=a.outputs))
    return replace(entry, file=chain[0].file, inputs=chain[0].inputs, outputs=chain[-1].outputs, chunks=chain)


def run_chain(entry: Any, inputs: list[torch.Tensor], run_piece: Any) -> list[torch.Tensor]:
    """A chunked point's outputs: each piece run (`run_piece(chunk, tensors)`) on the named values the denoise
    inputs and the earlier pieces gave; `BundleError` naming the point when the chain does not hold together."""
    from .errors import BundleError

    ran = [b for c in entry.chunks for b in c.blocks]
    if ran != list(entry.blocks):
        raise BundleError(f"the chain of {entry.method} runs blocks {ran}, the point {entry.name} has {entry.blocks}")
    env = dict(zip((s.name for s in entry.inputs), inputs, strict=True))
    for k, piece in enumerate(entry.chunks):
        missing = [s.name for s in piece.inputs if s.name not in env]
        if missing:
            raise BundleError(
                f"the chain of {entry.method}: piece {k} ({piece.function} of {piece.file}) takes {missing}, "
                "which no earlier piece gives"
            )
        outs = run_piece(piece, [env[s.name] for s in piece.inputs])
        env.update(zip((s.name for s in piece.outputs), outs, strict=True))
    missing = [s.name for s in entry.outputs if s.name not in env]
    if missing:
        raise BundleError(f"the chain of {entry.method} never gives {missing}")
    return [env[s.name] for s in entry.outputs]


def rebuilt_piece_unit(models: Models, unit: Any, chunk: Any, attention: str) -> Any:
    """The piece a manifest's chunk entry names, rebuilt from the checkpoint (`unit`: the point's whole unit)."""
    from dataclasses import replace

    spec = PieceSpec(-1, list(chunk.blocks), [s.name for s in chunk.inputs], [s.name for s in chunk.outputs])
    return replace(piece_unit(models, unit, spec, attention), method=chunk.function)
