"""The tokenizer a bundle's manifest describes for encode_text (docs/design.md, "Manifest", `text_encoder.tokenizer`).

Two kinds: the demo's `{"kind": "words", "vocab": [...], "length": L}` (in the manifest itself) and the SD3
family's `{"kind": "concat", "parts": [PART, ...]}`, whose parts' id rows are concatenated in order. A part is
`clip_bpe` (CLIP's byte-level BPE: `vocab`, `merges` files, `length`, the `bos`/`eos`/`pad`/`unk` ids and the ids of
the other `added_tokens` cut out of the raw text) or `t5` (a `tokenizers` library `file`, `length`, `pad`/`eos`/`unk`
ids). The files are bundle files under `tokenizers/<name>/`: hashed in `files`, confined like every path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..clip_tokenizer import CLIPBPETokenizer, SpecialTokens, TokenizerError
from ..errors import BundleError
from ..sd3_config import SD3TextConfig, TokenizerConfig, tokenizer_files
from .files import sha256_file

Tokenize = Callable[[str], list[int]]


def _clip_part(name: str, tok: TokenizerConfig, files: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    vocab_name, merges_name = tokenizer_files(tok)
    vocab = json.loads(files[vocab_name])
    part = {
        "kind": "clip_bpe",
        "name": name,
        "vocab": f"tokenizers/{name}/vocab.json",
        "merges": f"tokenizers/{name}/merges.txt",
        "length": tok.max_length,
        "bos": vocab[tok.bos_token],
        "eos": vocab[tok.eos_token],
        "pad": vocab[tok.pad_token],
        "unk": vocab[tok.unk_token],
        "added_tokens": [vocab[t] for t in tok.extra_tokens],
    }
    return part, {part["vocab"]: files[vocab_name], part["merges"]: files[merges_name]}


def _t5_part(tok: TokenizerConfig, files: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    from tokenizers import Tokenizer

    (stored,) = tokenizer_files(tok)
    backend = Tokenizer.from_str(files[stored])
    ids = {key: backend.token_to_id(text) for key, text in (("pad", tok.pad_token), ("eos", tok.eos_token))}
    ids["unk"] = backend.token_to_id(tok.unk_token)
    part = {"kind": "t5", "name": "t5", "file": "tokenizers/t5/tokenizer.json", "length": tok.max_length, **ids}
    return part, {part["file"]: files[stored]}


def sd3_tokenizer(te: SD3TextConfig, files: dict[str, str], with_t5: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The manifest's `text_encoder.tokenizer` of SD3 text encoders (CLIP-L, CLIP-G, then T5 when encode_text
    takes its ids) and the bundle files it names, path -> text, from the checkpoint's stored files."""
    made = [_clip_part("clip_l", te.tokenizer_l, files), _clip_part("clip_g", te.tokenizer_g, files)]
    if with_t5:
        assert te.tokenizer_t5 is not None
        made.append(_t5_part(te.tokenizer_t5, files))
    return {"kind": "concat", "parts": [p for p, _ in made]}, {k: v for _, f in made for k, v in f.items()}


# ------------------------------------------------------------------------------------------------ reading


def _read(bundle: Path, rel: str, listed: dict[str, str]) -> str:
    """A tokenizer file's text, only when the manifest lists it and its sha256 matches."""
    if rel not in listed:
        raise BundleError(f"{bundle}: the tokenizer file {rel!r} is not in the manifest's hashed file list")
    path = bundle / rel
    if not path.is_file() or sha256_file(path) != listed[rel]:
        raise BundleError(f"{bundle}: the tokenizer file {rel} is missing or does not match its sha256")
    return path.read_text(encoding="utf-8")


def _clip_from(part: dict[str, Any], bundle: Path, listed: dict[str, str]) -> Tokenize:
    vocab_json = _read(bundle, part["vocab"], listed)
    merges = _read(bundle, part["merges"], listed)
    by_id = {i: t for t, i in json.loads(vocab_json).items()}
    try:
        text = {k: by_id[part[k]] for k in ("bos", "eos", "pad", "unk")}
        extra = tuple(by_id[i] for i in part.get("added_tokens", []))
    except KeyError as exc:
        raise TokenizerError(f"tokenizer part {part['name']!r}: id {exc} is not in its vocabulary") from None
    special = SpecialTokens(text["bos"], text["eos"], text["unk"], text["pad"], extra)
    return CLIPBPETokenizer.from_files(vocab_json, merges, special, int(part["length"]))


def _t5_from(part: dict[str, Any], bundle: Path, listed: dict[str, str]) -> Tokenize:
    from tokenizers import Tokenizer

    from ..model.sd3_text import T5Tokenizer

    text = _read(bundle, part["file"], listed)
    pad = Tokenizer.from_str(text).id_to_token(int(part["pad"]))
    if pad is None:
        raise TokenizerError(f"tokenizer part {part['name']!r}: pad id {part['pad']} is not in its vocabulary")
    return T5Tokenizer(TokenizerConfig(files="t5", kind="t5", max_length=int(part["length"]), pad_token=pad), text)


PART_KINDS = {"clip_bpe": _clip_from, "t5": _t5_from}


def load_tokenizer(tokenizer: dict[str, Any], bundle: Path, files: list[dict[str, Any]]) -> Tokenize:
    """prompt -> the token id row encode_text takes, from a manifest's `text_encoder.tokenizer`."""
    from ..model.text_encoder import tokenize

    kind = tokenizer.get("kind")
    if kind == "words":
        vocab, length = tuple(tokenizer["vocab"]), int(tokenizer["length"])
        return lambda prompt: tokenize(prompt, vocab, length)
    if kind != "concat":
        raise BundleError(f"{bundle}: the manifest's tokenizer kind {kind!r} is unknown (words, concat)")
    listed = {e["path"]: e["sha256"] for e in files}
    parts = []
    for part in tokenizer.get("parts") or []:
        if part.get("kind") not in PART_KINDS:
            raise BundleError(f"{bundle}: tokenizer part kind {part.get('kind')!r} is unknown (clip_bpe, t5)")
        parts.append(PART_KINDS[part["kind"]](part, bundle, listed))
    if not parts:
        raise BundleError(f"{bundle}: the manifest's concat tokenizer has no parts")
    return lambda prompt: [i for tokenize_part in parts for i in tokenize_part(prompt)]
