"""manifest.json (version 1), typed: everything an app, `verify` and `profile` need to run a bundle.

`Manifest.to_dict()` is the JSON written (key order is part of the format: a re-export is byte-identical);
`Manifest.from_dict()` reads it back with named errors. Each method entry knows its kind, so nothing else works
out "is this the decoder?" from the manifest's layout. The schema is in docs/design.md ("Manifest").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BundleError
from ..operating_points import OperatingPoint
from ..recipes import Recipe, RecipeTarget, parse_recipe
from ..schedules import Schedule, check, from_manifest
from ..specs import MethodKind, TensorSpec
from .files import FORMAT

VERSION = 1
REQUIRED = ("operating_points", "files", "resolution", "scheduler", "recipe", "checkpoint_sha256")
POINT_REQUIRED = ("name", "method", "file", "inputs", "outputs")


def _specs(docs: list[dict[str, Any]]) -> list[TensorSpec]:
    return [TensorSpec.from_dict(d) for d in docs]


def _resolution(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    h, w = (int(x) for x in value)
    return h, w


def _decoder(doc: dict[str, Any]) -> MethodEntry:
    return MethodEntry(
        kind=MethodKind.DECODE,
        method=doc["method"],
        file=doc["file"],
        data_file=doc.get("data_file"),
        inputs=_specs(doc["inputs"]),
        outputs=_specs(doc["outputs"]),
        resolution=_resolution(doc.get("resolution")),
        **_planned(doc),
    )


def _planned(doc: dict[str, Any]) -> dict[str, int | None]:
    """A decode or encode_text entry's planned memory, where the manifest states it."""
    return {k: None if doc.get(k) is None else int(doc[k]) for k in ("weight_bytes", "arena_bytes")}


@dataclass(kw_only=True)
class MethodEntry:
    """One method of the bundle's artifact: its kind, where it is, and its signature in call order."""

    kind: MethodKind
    method: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    resolution: tuple[int, int] | None = None  # denoise and decode: the image size the method is fixed to
    data_file: str | None = None  # the weights file the program loads beside it (`--weights external`)
    weight_bytes: int | None = None  # decode / encode_text: planned resident weight bytes (footprint.py)
    arena_bytes: int | None = None  # decode / encode_text: the activation arena the runtime plans, where known

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"method": self.method, "file": self.file}
        if self.data_file:  # only when external: inline manifests stay as they were
            doc["data_file"] = self.data_file
        if self.resolution is not None:
            doc["resolution"] = list(self.resolution)
        doc |= {k: v for k in ("weight_bytes", "arena_bytes") if (v := getattr(self, k)) is not None}
        return {**doc, "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    @property
    def planned_bytes(self) -> int:
        """Resident weights + planned arena, as far as the manifest states them."""
        return (self.weight_bytes or 0) + (self.arena_bytes or 0)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise BundleError(f"method {self.method} has no input '{name}'")


@dataclass(kw_only=True)
class ChunkEntry:
    """One piece of a chunked point: a function of one block-range package, the point's blocks it runs, and its
    named inputs / outputs (taken from the denoise inputs and the earlier pieces' outputs, by name)."""

    file: str
    function: str
    blocks: list[int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "function": self.function,
            "blocks": list(self.blocks),
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    @staticmethod
    def from_dict(doc: dict[str, Any]) -> ChunkEntry:
        return ChunkEntry(
            file=doc["file"],
            function=doc["function"],
            blocks=[int(b) for b in doc["blocks"]],
            inputs=_specs(doc["inputs"]),
            outputs=_specs(doc["outputs"]),
        )


@dataclass(kw_only=True)
class PointEntry(MethodEntry):
    """A denoise method: one operating point."""

    kind: MethodKind = MethodKind.DENOISE
    name: str
    compression_ratio: int
    depth: str
    blocks: list[int]
    tokens: int = 0
    gflops: float = 0.0
    ssba_sparsity: float = 0.0  # joint-sequence sparsity averaged over the layers (docs/design.md, "SSBA")
    ssba_image_sparsity: float = 0.0
    weight_bytes: int = 0  # planned resident weight bytes of this method in the bundle's storage (footprint.py)
    chunks: list[ChunkEntry] = field(default_factory=list)  # a chunked point: its pieces in chain order (else none)

    @property
    def point(self) -> OperatingPoint:
        return OperatingPoint(self.compression_ratio, self.depth, tuple(self.blocks))

    @property
    def batch(self) -> int:
        return int(self.inputs[0].shape[0])

    def to_dict(self) -> dict[str, Any]:
        method = super().to_dict()
        return {
            "name": self.name,
            "compression_ratio": self.compression_ratio,
            "depth": self.depth,
            "blocks": list(self.blocks),
            **({"resolution": method["resolution"]} if "resolution" in method else {}),
            "method": method["method"],
            "file": method["file"],
            **({"data_file": method["data_file"]} if "data_file" in method else {}),
            "tokens": self.tokens,
            "gflops": self.gflops,
            "ssba_sparsity": self.ssba_sparsity,
            "ssba_image_sparsity": self.ssba_image_sparsity,
            "weight_bytes": self.weight_bytes,
            "arena_bytes": self.arena_bytes,
            "inputs": method["inputs"],
            "outputs": method["outputs"],
            **({"chunks": [c.to_dict() for c in self.chunks]} if self.chunks else {}),
        }


@dataclass(kw_only=True)
class TextEncoderEntry(MethodEntry):
    kind: MethodKind = MethodKind.ENCODE_TEXT
    tokenizer: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "tokenizer": self.tokenizer}


@dataclass(kw_only=True)
class Manifest:
    target: str
    checkpoint_sha256: str
    recipe: Recipe  # normalized; written as the recipe file's own tables (`Recipe.to_manifest`)
    resolution: tuple[int, int]
    scheduler: dict[str, Any]
    operating_points: list[PointEntry]
    decoder: MethodEntry | None = None  # at the default resolution
    decoders: list[MethodEntry] = field(default_factory=list)  # at the other resolutions, in `resolutions` order
    text_encoder: TextEncoderEntry | None = None
    resolutions: list[tuple[int, int]] = field(default_factory=list)  # every resolution, the default first
    latent: dict[str, Any] = field(default_factory=dict)
    cfg_batch: bool = False
    default_operating_point: str = ""
    tool_version: str = ""
    backend_report: dict[str, Any] = field(default_factory=dict)  # per method, as the target reported it
    runtime_ops: list[str] = field(default_factory=list)  # custom ops the runtime must provide (Target.runtime_ops)
    files: list[dict[str, Any]] = field(default_factory=list)  # {path, sha256, bytes}, written by the writer
    schedules: dict[str, Schedule] = field(default_factory=dict)  # named step schedules, for apps (design)

    def methods(self) -> list[MethodEntry]:
        """Every method, denoise first (manifest order), then decode (each resolution) and encode_text."""
        decoders = [self.decoder, *self.decoders] if self.decoder is not None else []
        return [*self.operating_points, *decoders, *([self.text_encoder] if self.text_encoder else [])]

    def all_resolutions(self) -> list[tuple[int, int]]:
        """`resolutions` as written, or the one `resolution` of a bundle written before there were several."""
        return [(r[0], r[1]) for r in self.resolutions] or [(self.resolution[0], self.resolution[1])]

    def _resolution(self, resolution: tuple[int, int] | None) -> tuple[int, int]:
        h, w = resolution or self.resolution
        if (h, w) not in self.all_resolutions():
            have = ", ".join(f"{a}x{b}" for a, b in self.all_resolutions())
            raise BundleError(f"the bundle has no methods for {h}x{w}; it has {have}")
        return h, w

    def points_at(self, resolution: tuple[int, int] | None = None) -> list[PointEntry]:
        """The denoise entries at a resolution (default: the bundle's default)."""
        wanted = self._resolution(resolution)
        return [p for p in self.operating_points if tuple(p.resolution or self.resolution) == wanted]

    def decoder_at(self, resolution: tuple[int, int] | None = None) -> MethodEntry | None:
        wanted = self._resolution(resolution)
        for entry in [e for e in (self.decoder, *self.decoders) if e is not None]:
            if tuple(entry.resolution or self.resolution) == wanted:
                return entry
        return None

    def companions_bytes(self, resolution: tuple[int, int] | None = None) -> int:
        """The planned memory (weights + arena) of what a generation runs beside a denoise point at a resolution:
        the text encoder and that resolution's decoder, both loaded with the point."""
        return sum(e.planned_bytes for e in (self.text_encoder, self.decoder_at(resolution)) if e is not None)

    def method(self, name: str) -> MethodEntry:
        for entry in self.methods():
            if entry.method == name:
                return entry
        raise BundleError(f"the bundle has no method '{name}'")

    def point(self, name: str, resolution: tuple[int, int] | None = None) -> PointEntry:
        """The entry of point `name` at `resolution` (None: the bundle's default resolution)."""
        for entry in self.points_at(resolution):
            if entry.name == name:
                return entry
        at = f" at {resolution[0]}x{resolution[1]}" if resolution is not None else ""
        raise BundleError(f"the bundle has no operating point '{name}'{at}")

    def resolution_of(self, entry: MethodEntry) -> tuple[int, int]:
        h, w = entry.resolution or self.resolution
        return h, w

    def point_resolutions(self) -> dict[str, list[tuple[int, int]]]:
        """Each point name -> the resolutions the bundle holds it at (what a schedule is checked against)."""
        held: dict[str, list[tuple[int, int]]] = {}
        for entry in self.operating_points:
            held.setdefault(entry.name, []).append(self.resolution_of(entry))
        return held

    def to_dict(self) -> dict[str, Any]:
        """The manifest as written (without `files` until the writer has hashed them)."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "target": self.target,
            "tool": {"name": "elasticdit", "version": self.tool_version},
            "checkpoint_sha256": self.checkpoint_sha256,
            "recipe": self.recipe.to_manifest(),
            "resolution": list(self.resolution),
            "resolutions": [list(r) for r in self.all_resolutions()],
            "scheduler": self.scheduler,
            "latent": self.latent,
            "cfg_batch": self.cfg_batch,
            "default_operating_point": self.default_operating_point,
            "operating_points": [p.to_dict() for p in self.operating_points],
            **({"schedules": {n: s.to_manifest() for n, s in self.schedules.items()}} if self.schedules else {}),
            "decoder": self.decoder.to_dict() if self.decoder else None,
            **({"decoders": [d.to_dict() for d in self.decoders]} if self.decoders else {}),
            "text_encoder": self.text_encoder.to_dict() if self.text_encoder else None,
            "backend_report": self.backend_report,
        }
        if self.runtime_ops:  # omitted when empty: a bundle that needs only the stock runtime reads as before
            doc["runtime_ops"] = list(self.runtime_ops)
        if self.files:
            doc["files"] = self.files
        return doc

    @staticmethod
    def from_dict(doc: dict[str, Any], where: str, targets: Mapping[str, RecipeTarget]) -> Manifest:
        """A manifest document already checked by `check_structure` -> the typed model (named errors)."""
        try:
            points = [
                PointEntry(
                    method=p["method"],
                    file=p["file"],
                    data_file=p.get("data_file"),
                    inputs=_specs(p["inputs"]),
                    outputs=_specs(p["outputs"]),
                    name=p["name"],
                    compression_ratio=int(p.get("compression_ratio", 0)),
                    depth=str(p.get("depth")),
                    blocks=list(p.get("blocks", [])),
                    tokens=p.get("tokens", 0),
                    gflops=float(p.get("gflops", 0.0)),
                    ssba_sparsity=p.get("ssba_sparsity", 0.0),
                    ssba_image_sparsity=p.get("ssba_image_sparsity", 0.0),
                    resolution=_resolution(p.get("resolution")),
                    weight_bytes=int(p.get("weight_bytes") or 0),
                    arena_bytes=p.get("arena_bytes"),
                    chunks=[ChunkEntry.from_dict(c) for c in p.get("chunks") or []],
                )
                for p in doc["operating_points"]
            ]
            dec, te = doc.get("decoder"), doc.get("text_encoder")
            decoder = _decoder(dec) if dec else None
            decoders = [_decoder(d) for d in doc.get("decoders") or []]
            resolutions = [_resolution(r) for r in doc.get("resolutions") or []]
            text_encoder = (
                TextEncoderEntry(
                    method=te["method"],
                    file=te["file"],
                    data_file=te.get("data_file"),
                    inputs=_specs(te["inputs"]),
                    outputs=_specs(te["outputs"]),
                    tokenizer=te.get("tokenizer"),
                    **_planned(te),
                )
                if te
                else None
            )
            resolution = tuple(int(x) for x in doc["resolution"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{where}: a method entry is malformed ({type(exc).__name__}: {exc})") from None
        if not isinstance(doc["recipe"], dict):
            raise BundleError(f"{where}: 'recipe' must be a table")
        runtime_ops = doc.get("runtime_ops", [])
        if not isinstance(runtime_ops, list) or not all(isinstance(op, str) and op for op in runtime_ops):
            raise BundleError(f"{where}: 'runtime_ops' must be a list of operator names")
        manifest = Manifest(
            target=doc["target"],
            checkpoint_sha256=doc["checkpoint_sha256"],
            recipe=parse_recipe(doc["recipe"], where, targets),
            resolution=resolution,  # type: ignore[arg-type]
            scheduler=doc["scheduler"],
            operating_points=points,
            decoder=decoder,
            decoders=decoders,
            text_encoder=text_encoder,
            resolutions=[r for r in resolutions if r is not None],
            latent=doc.get("latent") or {},
            cfg_batch=bool(doc.get("cfg_batch")),
            default_operating_point=doc.get("default_operating_point") or (points[0].name if points else ""),
            tool_version=(doc.get("tool") or {}).get("version", ""),
            backend_report=doc.get("backend_report") or {},
            runtime_ops=list(runtime_ops),
            files=doc["files"],
        )
        manifest.schedules = read_schedules(doc.get("schedules"), manifest, where)
        return manifest


def read_schedules(doc: Any, manifest: Manifest, where: str) -> dict[str, Schedule]:
    """The manifest's `schedules` (named `ScheduleError`s): each a list of {point, share} whose points the bundle
    holds (at some resolution: the resolution is the app's choice, checked when a schedule runs)."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: 'schedules' must be a table of NAME -> [{{point, share}}, ...]")
    held = manifest.point_resolutions()
    return {name: check(from_manifest(name, phases, where), held, where=where) for name, phases in doc.items()}


def check_structure(doc: Any, path: str, targets: Mapping[str, Any]) -> dict[str, Any]:
    """The checks every reader runs first: format, version, a known target, the required keys."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"{path} is not an {FORMAT} manifest")
    if doc.get("version") != VERSION:
        raise BundleError(f"{path} has manifest version {doc.get('version')!r}; this tool reads {VERSION}")
    if doc.get("target") not in targets:
        raise BundleError(f"{path} names an unknown target {doc.get('target')!r}")
    for key in REQUIRED:
        if key not in doc:
            raise BundleError(f"{path} lacks '{key}'")
    for point in doc["operating_points"]:
        for key in POINT_REQUIRED:
            if key not in point:
                raise BundleError(f"{path}: an operating point lacks '{key}'")
    return doc
