"""CLIP's byte-level BPE tokenizer, as transformers' `CLIPTokenizer` runs it, with no transformers and no network.

The steps are those of the tokenizer transformers builds (its `tokenizers` pipeline): special tokens are cut out of
the raw text first (bos, eos, unk, pad and any other added token: SD3's second tokenizer pads with "!", so a "!"
in a prompt is that token, not the BPE "!</w>"); each remaining piece is NFC-normalised, runs of whitespace become
one space and it is lower-cased (transformers' path without ftfy); CLIP's regex splits it into words; each word's
UTF-8 bytes map to GPT-2's byte alphabet and merge by BPE rank with "</w>" on the last symbol; unknown symbols
become the unk token. Then bos + at most `max_length - 2` tokens + eos, padded to `max_length` with the pad token.
"""

from __future__ import annotations

import functools
import itertools
import json
import unicodedata
from dataclasses import dataclass

import regex

from .errors import ElasticDiTError

WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
WHITESPACE = regex.compile(r"\s+")


class TokenizerError(ElasticDiTError):
    """Tokenizer files are missing, malformed or do not hold the tokens the tokenizer needs."""


@functools.cache
def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars), strict=True))


@dataclass(frozen=True)
class SpecialTokens:
    bos: str = "<|startoftext|>"
    eos: str = "<|endoftext|>"
    unk: str = "<|endoftext|>"
    pad: str = "<|endoftext|>"
    extra: tuple[str, ...] = ()  # other added tokens, cut out of the raw text like the four above


class CLIPBPETokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special: SpecialTokens, max_length: int):
        self.vocab, self.special, self.max_length = vocab, special, max_length
        self.merges = list(merges)
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        missing = [t for t in (special.bos, special.eos, special.unk, special.pad, *special.extra) if t not in vocab]
        if missing:
            raise TokenizerError(f"the CLIP vocabulary lacks the special token {missing[0]!r}")
        if max_length < 2:
            raise TokenizerError(f"a CLIP tokenizer needs max_length >= 2, got {max_length}")
        cut = {special.bos, special.eos, special.unk, special.pad, *special.extra}
        self.cut_pattern = regex.compile("|".join(regex.escape(t) for t in sorted(cut, key=len, reverse=True)))
        self._bpe = functools.lru_cache(maxsize=4096)(self._merge)

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

    def _merge(self, word: str) -> tuple[str, ...]:
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            ranked = [self.ranks[pair] for pair in itertools.pairwise(symbols) if pair in self.ranks]
            if not ranked:
                break
            first, second = self.merges[min(ranked)]
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def _encode_text(self, text: str) -> list[int]:
        text = WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).lower()
        alphabet, unk = byte_alphabet(), self.vocab[self.special.unk]
        ids = []
        for word in WORD_PATTERN.findall(text):
            mapped = "".join(alphabet[b] for b in word.encode("utf-8"))
            ids += [self.vocab.get(symbol, unk) for symbol in self._bpe(mapped)]
        return ids

    def encode(self, prompt: str) -> list[int]:
        """Token ids without bos/eos, special tokens in the text kept as theirs."""
        ids: list[int] = []
        start = 0
        for match in self.cut_pattern.finditer(prompt):
            ids += self._encode_text(prompt[start : match.start()])
            ids.append(self.vocab[match.group()])
            start = match.end()
        return ids + self._encode_text(prompt[start:])

    def __call__(self, prompt: str) -> list[int]:
        """bos, the prompt's tokens (truncated), eos, then pad up to max_length: `padding="max_length",
        truncation=True` as the SD3 pipeline asks for."""
        body = self.encode(prompt)[: self.max_length - 2]
        ids = [self.vocab[self.special.bos], *body, self.vocab[self.special.eos]]
        return ids + [self.vocab[self.special.pad]] * (self.max_length - len(ids))
