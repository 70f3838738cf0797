"""The package's CLIP tokenizer (elasticdit.clip_tokenizer, what `generate`/`verify` run for an SD3 bundle) and
elasticdit-run's (runtime/src/clip_bpe.cpp) against transformers' `CLIPTokenizer` built offline from the small
vocabulary and merges tests/test_native_tokenizer.py writes (model_max_length 77): the same ids on a list of
tricky prompts (case mappings with context such as Greek final sigma, accents composed and not, special-token
spellings, whitespace runs, numbers, punctuation, emoji, long prompts truncated at 77), for CLIP-L's pad and for
CLIP-G's pad "!" (an added token cut out of the raw text)."""

from __future__ import annotations

import json

import pytest
from test_native_tokenizer import LENGTH, PROMPTS, clip_part, reference, tokenize, write_tokenizer
from transformers import CLIPTokenizer

from elasticdit.clip_tokenizer import CLIPBPETokenizer, SpecialTokens, TokenizerError

TRICKY = [
    "ΟΔΟΣ",  # capital sigma at a word's end: per code point it lower-cases to σ, not Python's final ς
    "ΣΑΣ ΣΟΦΟΣ. Σ Aσ ΌΣΟΣ's",
    "<|STARTOFTEXT|>",  # lower-cases into the literal the pre-tokenizer splits as "<|", word, "|>"
    "a<|StartOfText|>>b <|ENDOFTEXT|>!! <|endoftext|>>",
    "<|startoftext|><|startoftext|> <| startoftext |> <|endoftext|>x",
    "İstanbul ẞ ß ΐ ǈ Ǳ ﬀ K Å",  # one -> two code points, title case, compatibility letters
    "Ǹ ñ n\u0303 A\u0301\u0301 \u0301lone ḍ\u0307 d\u0307\u0323",  # composed, decomposed, reordered marks
    "  leading   and\ttrailing \n\n ",
    "\u2028line\u2029para\u180emongolian\u200bzws\u2060wj\ufeffbom",
    "3.14159 1,000,000 ²³ ½ ⅔ Ⅳ ٤٥ १२ 𝟙𝟚 0x1F 10e-3",
    "!!! ?!?! ... -- — «quoted» “curly” 'single' `tick` #hash @at $5 %50 ^&*()[]{}<>|\\/~",
    "it's IT'S we'LL they'Ve I'M don't 'tis ''s ’s",
    "😀😃 👩‍👩‍👧 🇫🇷 ❤️ 1️⃣ 🏳️‍🌈",
    "日本語のテキスト 中文 한국어 Ελληνικά русский עברית العربية हिन्दी ไทย",
    " ".join(["photograph"] * 40) + " tail",  # truncated: bos + 75 + eos
    "naïve " * 30,
    "",
    " ",
    "x" * 300,
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(folder, files' texts, transformers' CLIP-L, transformers' CLIP-G with pad "!")."""
    root = tmp_path_factory.mktemp("clip-py")
    write_tokenizer(root / "clip_l")
    texts = ((root / "clip_l" / "vocab.json").read_text(), (root / "clip_l" / "merges.txt").read_text())
    hf_l = CLIPTokenizer.from_pretrained(root / "clip_l", model_max_length=LENGTH)
    hf_g = CLIPTokenizer.from_pretrained(root / "clip_l", pad_token="!", model_max_length=LENGTH)
    return root, texts, hf_l, hf_g


def ours(texts: tuple[str, str], **special: str) -> CLIPBPETokenizer:
    return CLIPBPETokenizer.from_files(*texts, SpecialTokens(**special), LENGTH)


@pytest.mark.parametrize("pad", ["<|endoftext|>", "!"])
def test_python_tokenizer_equals_transformers(clip, pad):
    _, texts, hf_l, hf_g = clip
    hf = hf_l if pad == "<|endoftext|>" else hf_g
    mine = ours(texts, pad=pad)
    prompts = PROMPTS + TRICKY
    want = reference(hf, prompts)
    for prompt, w in zip(prompts, want, strict=True):
        assert mine(prompt) == w, prompt
    assert all(len(row) == LENGTH for row in want)
    # the list sees what it claims to: final vs medial sigma tokens differ, the upper-case literal is split
    assert want[len(PROMPTS)] != reference(hf, ["ΟΔΟς"])[0]
    assert hf.bos_token_id not in want[len(PROMPTS) + 2][1:]


def test_python_tokenizer_follows_added_tokens(clip):
    """An extra added token is cut out of the raw text, before normalisation, by leftmost-longest match."""
    _, texts, _, _ = clip
    vocab = json.loads(texts[0])
    vocab |= {"red": len(vocab), "redd": len(vocab) + 1}
    mine = CLIPBPETokenizer.from_files(json.dumps(vocab), texts[1], SpecialTokens(extra=("red", "redd")), LENGTH)
    merges = [tuple(m.split()) for m in texts[1].splitlines()[1:]]
    hf = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=LENGTH)
    hf.add_tokens(["red", "redd"], special_tokens=True)
    prompts = ["a red reddish RED Red", "reddd redred", "xred"]
    assert [mine(p) for p in prompts] == reference(hf, prompts)


@pytest.mark.parametrize(
    "vocab, merges, message",
    [
        ("[1, 2]", "", "must map tokens to integer ids"),
        ("{", "", "not valid JSON"),
        (None, "#version: 0.2\nr e d\n", "not one pair"),
        (None, "#version: 0.2\nzz qq\n", "names a token vocab.json lacks"),
    ],
)
def test_bad_files_are_named_errors(clip, vocab, merges, message):
    _, texts, _, _ = clip
    with pytest.raises(TokenizerError, match=message):
        CLIPBPETokenizer.from_files(vocab or texts[0], merges, SpecialTokens(), LENGTH)


def test_native_tokenizer_equals_transformers_on_the_tricky_list(clip):
    """elasticdit-run tokenizes a file of prompts: the same ids as transformers on the same list (the build is the
    cached one tests/test_native_tokenizer.py uses)."""
    from test_native_support import runner_for

    native = runner_for("host")
    root, _, hf_l, hf_g = clip
    (root / "tricky.json").write_text(json.dumps(TRICKY))
    for hf in (hf_l, hf_g):
        got = tokenize(native, root, clip_part("clip_l", root / "clip_l", hf), "tricky.json")
        for prompt, g, w in zip(TRICKY, got, reference(hf, TRICKY), strict=True):
            assert g == w, prompt
