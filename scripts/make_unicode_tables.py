"""Write runtime/src/unicode_tables.inc: the Unicode data elasticdit-run's CLIP tokenizer needs to give the ids
transformers' `CLIPTokenizer` gives (its Rust `tokenizers` pipeline), for every prompt.

Every table is read off the behaviour of the very functions that tokenizer runs, one code point at a time, so the
C++ side reproduces *them*, whatever Unicode version each one implements:

- letters, numbers, whitespace: what the `tokenizers` regex engine (Oniguruma, `tokenizers.Regex`) matches with
  `\\p{L}`, `\\p{N}`, `\\s` (the pre-tokenizer's pattern and the normalizer's `\\s+` -> " ");
- lowercase: `normalizers.Lowercase` on each code point where it changes it (to one code point, or several:
  U+0130); it maps code point by code point (no final-sigma context, unlike Python's `str.lower`);
- NFC: canonical combining classes, single-level canonical decompositions and the composition exclusions among
  the two-code-point ones, from CPython's `unicodedata` (which exposes them; `tokenizers` does not), checked here
  against `normalizers.NFC` on every code point (the script fails if one differs); Hangul is algorithmic in both;
- Python whitespace: `str.isspace` (what `str.split` splits at: the demo's word tokenizer).

    python scripts/make_unicode_tables.py            # rewrite the file
    python scripts/make_unicode_tables.py --check    # exit 1 if the file differs from what these packages make

tests/test_native_tokenizer.py runs the same check, so an upgrade of `tokenizers` (or Python) that changes a table
fails CI until the file is remade.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path

from tokenizers import Regex, normalizers, pre_tokenizers

OUT = Path(__file__).resolve().parent.parent / "runtime" / "src" / "unicode_tables.inc"
HANGUL = range(0xAC00, 0xAC00 + 11172)


def code_points() -> list[int]:
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]  # UTF-8 holds no surrogates


def ranges(members: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(members):
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def matched(pattern: str) -> set[int]:
    """The code points `tokenizers`' regex engine matches with a one-character class."""
    split = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True)
    text = "".join(map(chr, code_points()))
    return {ord(text[i]) for _, (start, end) in split.pre_tokenize_str(text) for i in range(start, end)}


def per_code_point(normalize: Callable[[str], str]) -> dict[int, str]:
    return {c: normalize(chr(c)) for c in code_points()}


def lowercase() -> tuple[list[tuple[int, int, int, int]], list[tuple[int, ...]]]:
    """Runs [first, last, stride, delta] (every stride-th code point from first maps to itself + delta, the ones
    between map to themselves: runs never overlap), and the one-to-several mappings."""
    single, multi = {}, []
    for c, low in per_code_point(normalizers.Lowercase().normalize_str).items():
        if low != chr(c):
            if len(low) == 1:
                single[c] = ord(low) - c
            else:
                multi.append((c, *map(ord, low)))
    runs: list[list[int]] = []
    for c, delta in sorted(single.items()):
        if runs and runs[-1][3] == delta:
            _, last, stride, _ = runs[-1]
            if c == last + 1 and stride in (0, 1):
                runs[-1][1:3] = [c, 1]
                continue
            if c == last + 2 and stride in (0, 2) and last + 1 not in single:
                runs[-1][1:3] = [c, 2]
                continue
        runs.append([c, c, 0, delta])
    return [(first, last, max(stride, 1), delta & 0xFFFFFFFF) for first, last, stride, delta in runs], multi


def combining_classes() -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for c in code_points():
        ccc = unicodedata.combining(chr(c))
        if ccc:
            if out and out[-1][1] == c - 1 and out[-1][2] == ccc:
                out[-1] = (out[-1][0], c, ccc)
            else:
                out.append((c, c, ccc))
    return out


def decompositions() -> tuple[list[tuple[int, int, int]], list[int]]:
    """Single-level canonical decompositions (c, first, second or 0) and the two-code-point ones NFC does not
    recompose (composition exclusions, non-starter decompositions)."""
    table, excluded = [], []
    for c in code_points():
        if c in HANGUL:
            continue
        mapping = unicodedata.decomposition(chr(c))
        if not mapping or mapping.startswith("<"):
            continue
        parts = [int(p, 16) for p in mapping.split()]
        assert len(parts) in (1, 2), (hex(c), mapping)
        table.append((c, parts[0], parts[1] if len(parts) == 2 else 0))
        if len(parts) == 2 and unicodedata.normalize("NFC", chr(parts[0]) + chr(parts[1])) != chr(c):
            excluded.append(c)
    return table, excluded


def check_nfc_agrees() -> None:
    """The NFC tables come from unicodedata; the tokenizer runs `tokenizers`' NFC. They must agree."""
    theirs = per_code_point(normalizers.NFC().normalize_str)
    differ = [c for c, text in theirs.items() if text != unicodedata.normalize("NFC", chr(c))]
    if differ:
        raise SystemExit(
            f"unicodedata {unicodedata.unidata_version} and tokenizers' NFC differ on {len(differ)} code points "
            f"(first U+{differ[0]:04X}): the NFC tables cannot come from this Python"
        )


def rows(name: str, items: list[tuple[int, ...]], width: int, per_line: int = 6) -> str:
    cells = ["{" + ", ".join(f"0x{v:x}" for v in item) + "}" for item in items]
    lines = [", ".join(cells[i : i + per_line]) for i in range(0, len(cells), per_line)]
    body = ",\n    ".join(lines)
    return f"constexpr uint32_t {name}[][{width}] = {{\n    {body}}};\n"


def render() -> str:
    check_nfc_agrees()
    single, multi = lowercase()
    width = max(len(m) for m in multi)
    multi = [(*m, *([0] * (width - len(m)))) for m in multi]
    decomp, excluded = decompositions()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    head = (
        f"// Generated by scripts/make_unicode_tables.py from tokenizers {version('tokenizers')} and Python {python} "
        f"(unicodedata {unicodedata.unidata_version}).\n"
        "// Do not edit: remake it with the script (tests/test_native_tokenizer.py checks it is current).\n"
        "// Ranges are inclusive [first, last] code points, sorted.\n"
        "namespace elasticdit::unicode_data {\n\n"
    )
    parts = [
        "// tokenizers' regex (Oniguruma) `\\p{L}`, `\\p{N}`, `\\s`; Python str.isspace\n",
        rows("kLetter", ranges(matched(r"\p{L}")), 2),
        rows("kNumber", ranges(matched(r"\p{N}")), 2),
        rows("kRegexSpace", ranges(matched(r"\s")), 2),
        rows("kPythonSpace", ranges(c for c in code_points() if chr(c).isspace()), 2),
        "// tokenizers' Lowercase: runs [first, last, stride, delta mod 2^32] of one code point -> one;\n"
        "// one -> several (0-padded)\n",
        rows("kLower", single, 4, per_line=4),
        rows("kLowerMulti", multi, width),
        "// NFC: combining classes [first, last, class]; canonical decompositions [c, first, second or 0];\n"
        "// two-code-point decompositions NFC does not recompose\n",
        rows("kCombining", combining_classes(), 3),
        rows("kDecomposition", decomp, 3),
        rows("kCompositionExcluded", [(c,) for c in excluded], 1, per_line=10),
    ]
    return head + "\n".join(parts) + "\n}  // namespace elasticdit::unicode_data\n"


def is_current(text: str, path: Path = OUT) -> bool:
    return path.exists() and path.read_text() == text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not is_current(text):
            print(f"{OUT} is not what these packages make: run scripts/make_unicode_tables.py", file=sys.stderr)
            return 1
        print(f"{OUT} is current")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
