"""elasticdit-run's CLIP byte-level BPE tokenizer (runtime/src/clip_bpe.cpp) and "concat" against transformers'
CLIPTokenizer (the `tokenizers` pipeline SD3 runs), on a small vocabulary and merges written here: the same token
ids for prompts with Unicode (NFC, lowercase, CJK, Hangul, emoji), punctuation, contractions, special tokens in
the text, unknown symbols and truncation at 77; named errors for bad tokenizer files; and the generated Unicode
tables equal what scripts/make_unicode_tables.py makes from the installed packages."""

from __future__ import annotations

import collections
import importlib.util
import itertools
import json
from pathlib import Path

import pytest
from test_native_support import runner_for
from transformers import CLIPTokenizer

from elasticdit.native.errors import NativeRunError

ROOT = Path(__file__).resolve().parents[1]
LENGTH = 77
# Bytes whose "</w>" form the test vocabulary lacks: a word ending in U+0100 or an emoji (last byte 0x80) becomes
# unk; Greek sigma and final sigma (last bytes 0x83, 0x82) keep distinct tokens, so lowercasing is seen.
UNKNOWN_LAST_BYTES = {0x80, 0x81, *range(0x84, 0x90)}
CORPUS_TEXT = (
    "a red circle left of a blue square the photo of a cat's toy hello world words wordy reddish crème brûlée "
    "café naïve über straße 猫 한국어 circles squares photograph 1234 won't you're we'd"
)
CORPUS = CORPUS_TEXT.split(" ")
PROMPTS = [
    "a red circle left of a blue square",
    "",
    "A  Photo\tof\n\nTHE   cat's  toy, isn't it? I'll go; we'd've YOU'RE",
    "Crème brûlée, naïve café — 10,000 ¥ / 3.14€!!",
    "e\u0301cole Cafe\u0301 A\u030a o\u0308\u0323 q\u0323\u0307",  # decomposed: NFC composes (and reorders)
    "ΟΔΟΣ ΣΟΦΟΣ STRASSE straße İstanbul ǅ Ω K",  # lowercase code point by code point, one -> two
    "猫が好き 한국어 😀 Ā д",  # CJK, Hangul, emoji, symbols missing from the vocabulary -> unk
    "<|startoftext|>hello<|endoftext|> world",  # special tokens in the text are theirs
    "<|STARTOFTEXT|>x <|endoftext|",  # not a special token: lowercased, split as words
    "wow!!! what?! ''s 'S l'amour rock'n'roll",
    "\u00a0non\u2003breaking\u3000spaces\u200b zero\u00adwidth tab\x0bvt\x0cff\x1cfs\x85nel",
    "ﬁne ﬂour ½ ² ① Ⅻ ٣ 𝟘",  # compatibility characters (NFC keeps them), numbers of several scripts
    " ".join(["photograph"] * 100),  # truncated at 77
    "1234567890" * 9,  # one token per digit: truncated
]


def byte_alphabet() -> dict[int, str]:
    """GPT-2's bytes_to_unicode."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = keep[:]
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + len(chars) - 188)
    return dict(zip(keep, map(chr, chars), strict=True))


def write_tokenizer(folder: Path, merges_count: int = 150, keep_merges: int | None = None) -> dict[str, int]:
    """CLIP's layout in small: the byte alphabet, its "</w>" forms (less those of UNKNOWN_LAST_BYTES, so some
    text has no token and becomes unk), merges learned from CORPUS by frequency, then the two special tokens."""
    alphabet = byte_alphabet()
    vocab: dict[str, int] = {}
    for b in sorted(alphabet):
        vocab[alphabet[b]] = len(vocab)
    for b in sorted(alphabet):
        if b not in UNKNOWN_LAST_BYTES:
            vocab[alphabet[b] + "</w>"] = len(vocab)
    words: collections.Counter[tuple[str, ...]] = collections.Counter()
    for word in CORPUS:
        symbols = [alphabet[b] for b in word.encode()]
        symbols[-1] += "</w>"
        words[tuple(symbols)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(merges_count):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, n in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        merged: collections.Counter[tuple[str, ...]] = collections.Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    order = merges[:keep_merges]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in order))
    return vocab


def clip_part(name: str, folder: Path, hf: CLIPTokenizer, **extra) -> dict:
    return {
        "kind": "clip_bpe",
        "name": name,
        "vocab": f"{folder.name}/vocab.json",
        "merges": f"{folder.name}/merges.txt",
        "length": LENGTH,
        "bos": hf.bos_token_id,
        "eos": hf.eos_token_id,
        "pad": hf.pad_token_id,
        **extra,
    }


def reference(hf: CLIPTokenizer, prompts: list[str]) -> list[list[int]]:
    return [hf(p, padding="max_length", truncation=True, max_length=LENGTH).input_ids for p in prompts]


@pytest.fixture(scope="module")
def native():
    return runner_for("host")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """(root, transformers' tokenizer as SD3's CLIP-L has it, the same with pad "!" as SD3's CLIP-G has it)."""
    root = tmp_path_factory.mktemp("clip")
    write_tokenizer(root / "clip_l")
    hf_l = CLIPTokenizer.from_pretrained(root / "clip_l")
    hf_g = CLIPTokenizer.from_pretrained(root / "clip_l", pad_token="!")
    (root / "prompts.json").write_text(json.dumps(PROMPTS))
    return root, hf_l, hf_g


def tokenize(native, root: Path, block: dict, prompts: str = "prompts.json") -> list[list[int]]:
    (root / "block.json").write_text(json.dumps(block))
    done = native.run("tokenize", "--tokenizer", str(root / "block.json"), "--prompts", str(root / prompts))
    return json.loads(done.stdout)


def test_clip_bpe_equals_transformers(native, tokenizers):
    root, hf_l, hf_g = tokenizers
    want = reference(hf_l, PROMPTS)
    got = tokenize(native, root, clip_part("clip_l", root / "clip_l", hf_l))
    for prompt, g, w in zip(PROMPTS, got, want, strict=True):
        assert g == w, prompt
    unk = hf_l.unk_token_id
    assert unk in want[6] and len(set(want[-1])) > 3 and want[-1][-1] == hf_l.eos_token_id  # unk, truncation seen
    # SD3's second CLIP pads with "!": a "!" in the prompt is that token, cut out before the BPE.
    got_g = tokenize(native, root, clip_part("clip_g", root / "clip_l", hf_g))
    assert got_g == reference(hf_g, PROMPTS)
    assert got_g[9] != got[9]


def test_clip_bpe_follows_the_merges(native, tokenizers, tmp_path):
    """The same vocabulary with only the first 40 merges tokenizes differently, in C++ as in transformers: the
    merges file is what joins symbols, not the vocabulary."""
    _, hf_l, _ = tokenizers
    write_tokenizer(tmp_path / "fewer", keep_merges=40)
    (tmp_path / "prompts.json").write_text(json.dumps(PROMPTS))
    hf_r = CLIPTokenizer.from_pretrained(tmp_path / "fewer")
    got = tokenize(native, tmp_path, clip_part("r", tmp_path / "fewer", hf_r))
    assert got == reference(hf_r, PROMPTS)
    assert got != reference(hf_l, PROMPTS)


def test_concat_is_the_parts_in_order(native, tokenizers):
    root, hf_l, hf_g = tokenizers
    block = {
        "kind": "concat",
        "parts": [clip_part("clip_l", root / "clip_l", hf_l), clip_part("clip_g", root / "clip_l", hf_g)],
    }
    got = tokenize(native, root, block)
    assert got == [a + b for a, b in zip(reference(hf_l, PROMPTS), reference(hf_g, PROMPTS), strict=True)]
    assert all(len(row) == 2 * LENGTH for row in got)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b, root: b.update(vocab="../clip_l/vocab.json"), "outside the bundle"),
        (lambda b, root: b.update(vocab="clip_l/missing.json"), "missing"),
        (lambda b, root: b.update(bos=10**6), "no token of vocab.json has the special id 1000000"),
        (lambda b, root: b.pop("eos"), "needs an integer 'eos'"),
        (lambda b, root: b.update(length=1), "length must be at least 2"),
        (lambda b, root: b.update(merges="bad/merges.txt"), "merges.txt line 2 is not one pair"),
        (lambda b, root: b.update(merges="bad/unknown.txt"), "names a token vocab.json lacks"),
        (lambda b, root: b.update(kind="t5"), "kind 't5' is not built into this runtime"),
    ],
)
def test_bad_tokenizer_files_are_named_errors(native, tokenizers, change, message):
    root, hf_l, _ = tokenizers
    (root / "bad").mkdir(exist_ok=True)
    (root / "bad" / "merges.txt").write_text("#version: 0.2\nr e d\n")
    (root / "bad" / "unknown.txt").write_text("zz qq\n")
    block = clip_part("clip_l", root / "clip_l", hf_l)
    change(block, root)
    with pytest.raises(NativeRunError) as err:
        tokenize(native, root, block)
    assert err.value.kind == "TokenizerError" and message in err.value.message, str(err.value)


def test_concat_needs_parts(native, tokenizers):
    root, _, _ = tokenizers
    with pytest.raises(NativeRunError, match="non-empty list 'parts'"):
        tokenize(native, root, {"kind": "concat", "parts": []})


def load_table_script():
    spec = importlib.util.spec_from_file_location("make_unicode_tables", ROOT / "scripts" / "make_unicode_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_unicode_tables_are_current(tmp_path):
    """Regenerating runtime/src/unicode_tables.inc from the installed tokenizers/Python gives the committed file;
    the script's --check fails on a file that differs."""
    script = load_table_script()
    text = script.render()
    assert (ROOT / "runtime" / "src" / "unicode_tables.inc").read_text() == text
    assert script.is_current(text, ROOT / "runtime" / "src" / "unicode_tables.inc")
    changed = tmp_path / "unicode_tables.inc"
    changed.write_text(text.replace("0x41, 0x5a", "0x41, 0x59", 1))
    assert not script.is_current(text, changed)
