"""Bundles: the typed manifest (`manifest`), the hashed file list (`files`), the atomic writer (`writer`) and
reading a bundle with every check in one call (`reader`, which knows the targets, so it is not re-exported here)."""

from .files import FORMAT, MANIFEST, check_files, sha256_file
from .manifest import Manifest, MethodEntry, PointEntry, TextEncoderEntry
from .writer import BundleWriter

__all__ = [
    "FORMAT",
    "MANIFEST",
    "BundleWriter",
    "Manifest",
    "MethodEntry",
    "PointEntry",
    "TextEncoderEntry",
    "check_files",
    "sha256_file",
]
