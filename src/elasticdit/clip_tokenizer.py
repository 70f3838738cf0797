"""CLIP's byte-level BPE tokenizer, as transformers' `CLIPTokenizer` runs it, with no transformers and no network.

It is the very `tokenizers` pipeline transformers builds for CLIP (transformers/models/clip/tokenization_clip.py):
a BPE model with "</w>" on each word's last symbol and the unk token for unknown symbols; NFC, runs of whitespace
-> one space, then lower-casing code point by code point (no final-sigma context, unlike Python's `str.lower`);
CLIP's regex split, whose `<|startoftext|>`/`<|endoftext|>` alternatives GPT-2's byte-level split then cuts into
"<|", the word, "|>". The special tokens (bos, eos, unk, pad and any other added token: SD3's second tokenizer pads
with "!", so a "!" in a prompt is that token, not the BPE "!</w>") are cut out of the raw text first, leftmost
longest, before normalisation. Then bos + at most `max_length - 2` tokens + eos, padded to `max_length` with the pad
token (`padding="max_length", truncation=True`). Running the library rather than a re-implementation keeps the
Unicode tables (letters, numbers, case) those of the Rust library, which differ from Python's `regex`/`str.lower`
on thousands of code points; runtime/src/clip_bpe.cpp reproduces the same pipeline with tables generated from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import ElasticDiTError

CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class TokenizerError(ElasticDiTError):
    """Tokenizer files are missing, malformed or do not hold the tokens the tokenizer needs."""


@dataclass(frozen=True)
class SpecialTokens:
    bos: str = "<|startoftext|>"
    eos: str = "<|endoftext|>"
    unk: str = "<|endoftext|>"
    pad: str = "<|endoftext|>"
    extra: tuple[str, ...] = ()  # other added tokens, cut out of the raw text like the four above


class CLIPBPETokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special: SpecialTokens, max_length: int):
        from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import BPE

        self.vocab, self.special, self.max_length = vocab, special, max_length
        missing = [t for t in (special.bos, special.eos, special.unk, special.pad, *special.extra) if t not in vocab]
        if missing:
            raise TokenizerError(f"the CLIP vocabulary lacks the special token {missing[0]!r}")
        if max_length < 2:
            raise TokenizerError(f"a CLIP tokenizer needs max_length >= 2, got {max_length}")
        unknown = next((m for m in merges if m[0] not in vocab or m[1] not in vocab or "".join(m) not in vocab), None)
        if unknown is not None:
            raise TokenizerError(f"merges.txt's pair {' '.join(unknown)!r} names a token vocab.json lacks")
        bpe = dict(dropout=None, continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False)
        try:
            model = BPE(vocab=vocab, merges=list(merges), unk_token=special.unk, **bpe)
        except Exception as exc:  # the Rust library raises its own exception types (e.g. an id out of range)
            raise TokenizerError(f"the CLIP vocabulary cannot be loaded: {str(exc).splitlines()[0]}") from None
        self.backend = Tokenizer(model)
        self.backend.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        self.backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        self.backend.add_special_tokens(list(dict.fromkeys((special.bos, special.eos, special.unk, special.pad))))
        if special.extra:
            self.backend.add_special_tokens(list(special.extra))

    @classmethod
    def from_files(cls, vocab_json: str, merges_txt: str, special: SpecialTokens, max_length: int) -> CLIPBPETokenizer:
        """From the text of `vocab.json` and `merges.txt` (the files a checkpoint stores)."""
        try:
            vocab = json.loads(vocab_json)
        except json.JSONDecodeError as exc:
            raise TokenizerError(f"vocab.json is not valid JSON: {exc.msg}") from None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise TokenizerError("vocab.json must map tokens to integer ids")
        merges = []
        for line in merges_txt.splitlines():
            if not line.strip() or line.startswith("#version"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise TokenizerError(f"merges.txt has a line that is not one pair: {line[:40]!r}")
            merges.append((parts[0], parts[1]))
        return cls(vocab, merges, special, max_length)

    def encode(self, prompt: str) -> list[int]:
        """Token ids without bos/eos, special tokens in the text kept as theirs."""
        return self.backend.encode(prompt, add_special_tokens=False).ids

    def __call__(self, prompt: str) -> list[int]:
        """bos, the prompt's tokens (truncated), eos, then pad up to max_length: `padding="max_length",
        truncation=True` as the SD3 pipeline asks for."""
        body = self.encode(prompt)[: self.max_length - 2]
        ids = [self.vocab[self.special.bos], *body, self.vocab[self.special.eos]]
        return ids + [self.vocab[self.special.pad]] * (self.max_length - len(ids))
