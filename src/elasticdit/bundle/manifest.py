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
from ..specs import MethodKind, TensorSpec
from .files import FORMAT

VERSION = 1
REQUIRED = ("operating_points", "files", "resolution", "scheduler", "recipe", "checkpoint_sha256")
POINT_REQUIRED = ("name", "method", "file", "inputs", "outputs")


def _specs(docs: list[dict[str, Any]]) -> list[TensorSpec]:
    return [TensorSpec.from_dict(d) for d in docs]


@dataclass(kw_only=True)
class MethodEntry:
    """One method of the bundle's artifact: its kind, where it is, and its signature in call order."""

    kind: MethodKind
    method: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "file": self.file,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise BundleError(f"method {self.method} has no input '{name}'")


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
            "method": method["method"],
            "file": method["file"],
            "tokens": self.tokens,
            "gflops": self.gflops,
            "ssba_sparsity": self.ssba_sparsity,
            "ssba_image_sparsity": self.ssba_image_sparsity,
            "inputs": method["inputs"],
            "outputs": method["outputs"],
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
    decoder: MethodEntry | None = None
    text_encoder: TextEncoderEntry | None = None
    latent: dict[str, Any] = field(default_factory=dict)
    cfg_batch: bool = False
    default_operating_point: str = ""
    tool_version: str = ""
    backend_report: dict[str, Any] = field(default_factory=dict)  # per method, as the target reported it
    files: list[dict[str, Any]] = field(default_factory=list)  # {path, sha256, bytes}, written by the writer

    def methods(self) -> list[MethodEntry]:
        """Every method, denoise first (manifest order), then decode and encode_text when present."""
        return [*self.operating_points, *(e for e in (self.decoder, self.text_encoder) if e is not None)]

    def method(self, name: str) -> MethodEntry:
        for entry in self.methods():
            if entry.method == name:
                return entry
        raise BundleError(f"the bundle has no method '{name}'")

    def point(self, name: str) -> PointEntry:
        for entry in self.operating_points:
            if entry.name == name:
                return entry
        raise BundleError(f"the bundle has no operating point '{name}'")

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
            "scheduler": self.scheduler,
            "latent": self.latent,
            "cfg_batch": self.cfg_batch,
            "default_operating_point": self.default_operating_point,
            "operating_points": [p.to_dict() for p in self.operating_points],
            "decoder": self.decoder.to_dict() if self.decoder else None,
            "text_encoder": self.text_encoder.to_dict() if self.text_encoder else None,
            "backend_report": self.backend_report,
        }
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
                )
                for p in doc["operating_points"]
            ]
            dec, te = doc.get("decoder"), doc.get("text_encoder")
            decoder = (
                MethodEntry(
                    kind=MethodKind.DECODE,
                    method=dec["method"],
                    file=dec["file"],
                    inputs=_specs(dec["inputs"]),
                    outputs=_specs(dec["outputs"]),
                )
                if dec
                else None
            )
            text_encoder = (
                TextEncoderEntry(
                    method=te["method"],
                    file=te["file"],
                    inputs=_specs(te["inputs"]),
                    outputs=_specs(te["outputs"]),
                    tokenizer=te.get("tokenizer"),
                )
                if te
                else None
            )
            resolution = tuple(int(x) for x in doc["resolution"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{where}: a method entry is malformed ({type(exc).__name__}: {exc})") from None
        if not isinstance(doc["recipe"], dict):
            raise BundleError(f"{where}: 'recipe' must be a table")
        return Manifest(
            target=doc["target"],
            checkpoint_sha256=doc["checkpoint_sha256"],
            recipe=parse_recipe(doc["recipe"], where, targets),
            resolution=resolution,  # type: ignore[arg-type]
            scheduler=doc["scheduler"],
            operating_points=points,
            decoder=decoder,
            text_encoder=text_encoder,
            latent=doc.get("latent") or {},
            cfg_batch=bool(doc.get("cfg_batch")),
            default_operating_point=doc.get("default_operating_point") or (points[0].name if points else ""),
            tool_version=(doc.get("tool") or {}).get("version", ""),
            backend_report=doc.get("backend_report") or {},
            files=doc["files"],
        )


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
