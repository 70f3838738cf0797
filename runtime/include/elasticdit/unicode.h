// The Unicode the tokenizers need, as their Python references see it: UTF-8; for CLIP, what transformers'
// CLIPTokenizer runs (the Rust `tokenizers` library): its NFC, its per-code-point Lowercase, its regex engine's
// \p{L}, \p{N} and \s; for the demo's word tokenizer, str.isspace. The data is a table generated from those very
// functions (scripts/make_unicode_tables.py -> src/unicode_tables.inc), so the answers are theirs, code point for
// code point.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace elasticdit {

using CodePoints = std::vector<uint32_t>;

// UTF-8 -> code points; Error(Tokenizer) naming the byte on malformed input (an overlong form, a surrogate, a
// truncated sequence): Python strings never hold such text, so there is nothing to match.
CodePoints decode_utf8(const std::string& text);
void append_utf8(std::string& out, uint32_t c);
std::string encode_utf8(const CodePoints& text);

bool is_letter(uint32_t c);        // tokenizers' regex \p{L}
bool is_number(uint32_t c);        // tokenizers' regex \p{N}
bool is_regex_space(uint32_t c);   // tokenizers' regex \s
bool is_python_space(uint32_t c);  // str.isspace: what str.split() and str.strip() take away

CodePoints nfc(const CodePoints& text);    // normalizers.NFC (= unicodedata.normalize("NFC", text))
CodePoints lower(const CodePoints& text);  // normalizers.Lowercase: code point by code point

}  // namespace elasticdit
