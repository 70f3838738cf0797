#include "elasticdit/unicode.h"

#include <algorithm>
#include <cstddef>
#include <unordered_map>
#include <unordered_set>

#include "elasticdit/errors.h"
#include "unicode_tables.inc"

namespace elasticdit {

namespace {

namespace ud = unicode_data;

// The row of a table sorted by its first column whose [first, last] holds c (nullptr when none does).
template <size_t N, size_t W>
const uint32_t* find_row(const uint32_t (&table)[N][W], uint32_t c) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (table[mid][0] <= c) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == 0) {
    return nullptr;
  }
  const uint32_t* row = table[lo - 1];
  return c <= row[1] ? row : nullptr;
}

// The row of a table sorted by its first column whose first column is c (nullptr when none is).
template <size_t N, size_t W>
const uint32_t* find_exact(const uint32_t (&table)[N][W], uint32_t c) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (table[mid][0] < c) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < N && table[lo][0] == c ? table[lo] : nullptr;
}

template <size_t N>
bool in_ranges(const uint32_t (&table)[N][2], uint32_t c) {
  return find_row(table, c) != nullptr;
}

// Hangul syllables decompose and compose algorithmically (Unicode 3.12), in CPython as everywhere.
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

int combining_class(uint32_t c) {
  const uint32_t* row = find_row(ud::kCombining, c);
  return row ? static_cast<int>(row[2]) : 0;
}

void decompose(uint32_t c, CodePoints& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const uint32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) {
      out.push_back(kTBase + s % kTCount);
    }
    return;
  }
  if (const uint32_t* row = find_exact(ud::kDecomposition, c)) {
    decompose(row[1], out);
    if (row[2]) {
      decompose(row[2], out);
    }
    return;
  }
  out.push_back(c);
}

// Primary composites: two-code-point canonical decompositions of a starter, not excluded (CPython's comp_data).
struct Compositions {
  std::unordered_map<uint64_t, uint32_t> pairs;
  std::unordered_set<uint32_t> firsts;

  Compositions() {
    for (const auto& row : ud::kDecomposition) {
      if (row[2] && combining_class(row[1]) == 0 && !find_exact(ud::kCompositionExcluded, row[0])) {
        pairs.emplace((static_cast<uint64_t>(row[1]) << 32) | row[2], row[0]);
        firsts.insert(row[1]);
      }
    }
  }
};

const Compositions& compositions() {
  static const Compositions table;
  return table;
}

}  // namespace

CodePoints decode_utf8(const std::string& s) {
  CodePoints out;
  size_t i = 0;
  auto bad = [](size_t at) {
    return Error(ErrorKind::Tokenizer, "the prompt is not valid UTF-8 (byte " + std::to_string(at) + ")");
  };
  while (i < s.size()) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    int extra;
    uint32_t c;
    if (b < 0x80) {
      extra = 0, c = b;
    } else if ((b & 0xe0) == 0xc0 && b >= 0xc2) {
      extra = 1, c = b & 0x1f;
    } else if ((b & 0xf0) == 0xe0) {
      extra = 2, c = b & 0x0f;
    } else if ((b & 0xf8) == 0xf0 && b <= 0xf4) {
      extra = 3, c = b & 0x07;
    } else {
      throw bad(i);
    }
    if (i + static_cast<size_t>(extra) >= s.size() && extra > 0) {
      throw Error(ErrorKind::Tokenizer, "the prompt is not valid UTF-8 (truncated sequence at the end)");
    }
    for (int k = 1; k <= extra; ++k) {
      const unsigned char cb = static_cast<unsigned char>(s[i + k]);
      if ((cb & 0xc0) != 0x80) {
        throw bad(i + k);
      }
      c = (c << 6) | (cb & 0x3f);
    }
    const bool overlong = (extra == 2 && c < 0x800) || (extra == 3 && c < 0x10000);
    if (overlong || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
      throw bad(i);
    }
    out.push_back(c);
    i += static_cast<size_t>(extra) + 1;
  }
  return out;
}

void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xc0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xe0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (c & 0x3f));
  }
}

std::string encode_utf8(const CodePoints& text) {
  std::string out;
  for (uint32_t c : text) {
    append_utf8(out, c);
  }
  return out;
}

bool is_letter(uint32_t c) { return in_ranges(ud::kLetter, c); }
bool is_number(uint32_t c) { return in_ranges(ud::kNumber, c); }
bool is_regex_space(uint32_t c) { return in_ranges(ud::kRegexSpace, c); }
bool is_python_space(uint32_t c) { return in_ranges(ud::kPythonSpace, c); }

// CPython's nfc_nfkc: the canonical decomposition, canonically ordered, then composed left to right: a starter
// that can begin a composite takes each following unblocked character it composes with.
CodePoints nfc(const CodePoints& text) {
  CodePoints d;
  for (uint32_t c : text) {
    decompose(c, d);
  }
  for (size_t i = 0; i < d.size();) {  // canonical order: a stable sort of each run of non-starters by class
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < d.size() && combining_class(d[end]) != 0) {
      ++end;
    }
    std::stable_sort(d.begin() + static_cast<long>(i), d.begin() + static_cast<long>(end),
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = end;
  }
  const Compositions& comp = compositions();
  CodePoints out;
  std::vector<bool> skipped(d.size(), false);
  for (size_t i = 0; i < d.size();) {
    if (skipped[i]) {
      ++i;
      continue;
    }
    uint32_t code = d[i];
    if (code >= kLBase && code < kLBase + kLCount && i + 1 < d.size() && d[i + 1] >= kVBase &&
        d[i + 1] < kVBase + kVCount) {
      code = kSBase + ((code - kLBase) * kVCount + (d[i + 1] - kVBase)) * kTCount;
      i += 2;
      if (i < d.size() && d[i] > kTBase && d[i] < kTBase + kTCount) {
        code += d[i] - kTBase;
        ++i;
      }
      out.push_back(code);
      continue;
    }
    if (comp.firsts.count(code)) {
      int blocked_by = 0;  // class of the last character after the starter that did not compose (0: none)
      for (size_t j = i + 1; j < d.size(); ++j) {
        const int cls = combining_class(d[j]);
        if (blocked_by && (cls == 0 || blocked_by >= cls)) {
          if (cls == 0) {
            break;
          }
          continue;
        }
        auto it = comp.pairs.find((static_cast<uint64_t>(code) << 32) | d[j]);
        if (it == comp.pairs.end()) {
          if (cls == 0) {
            break;
          }
          blocked_by = cls;
          continue;
        }
        code = it->second;
        skipped[j] = true;
        if (!comp.firsts.count(code)) {
          break;
        }
      }
    }
    out.push_back(code);
    ++i;
  }
  return out;
}

// tokenizers' Lowercase: each code point's full lowercase mapping on its own (no final-sigma context).
CodePoints lower(const CodePoints& text) {
  CodePoints out;
  out.reserve(text.size());
  for (uint32_t c : text) {
    if (const uint32_t* multi = find_exact(ud::kLowerMulti, c)) {
      for (size_t k = 1; k < std::size(ud::kLowerMulti[0]) && multi[k]; ++k) {
        out.push_back(multi[k]);
      }
      continue;
    }
    const uint32_t* run = find_row(ud::kLower, c);
    out.push_back(run && (c - run[0]) % run[2] == 0 ? c + run[3] : c);
  }
  return out;
}

}  // namespace elasticdit
