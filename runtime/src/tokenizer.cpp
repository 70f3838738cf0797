#include "elasticdit/tokenizer.h"

#include <map>
#include <mutex>
#include <unordered_map>

#include "elasticdit/errors.h"

namespace elasticdit {

namespace {

// Code points for which Python's str.isspace() is true (what str.split() with no argument splits at).
bool is_python_space(uint32_t c) {
  switch (c) {
    case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d: case 0x1c: case 0x1d: case 0x1e: case 0x1f:
    case 0x20: case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200a;
  }
}

// UTF-8 -> code points; Error(Tokenizer) on malformed input (Python would never see such a str).
std::vector<uint32_t> decode_utf8(const std::string& s) {
  std::vector<uint32_t> out;
  size_t i = 0;
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
      throw Error(ErrorKind::Tokenizer, "the prompt is not valid UTF-8 (byte " + std::to_string(i) + ")");
    }
    if (i + static_cast<size_t>(extra) >= s.size() && extra > 0) {
      throw Error(ErrorKind::Tokenizer, "the prompt is not valid UTF-8 (truncated sequence at the end)");
    }
    for (int k = 1; k <= extra; ++k) {
      const unsigned char cb = static_cast<unsigned char>(s[i + k]);
      if ((cb & 0xc0) != 0x80) {
        throw Error(ErrorKind::Tokenizer, "the prompt is not valid UTF-8 (byte " + std::to_string(i + k) + ")");
      }
      c = (c << 6) | (cb & 0x3f);
    }
    const bool overlong = (extra == 2 && c < 0x800) || (extra == 3 && c < 0x10000);
    if (overlong || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
      throw Error(ErrorKind::Tokenizer, "the prompt is not valid UTF-8 (byte " + std::to_string(i) + ")");
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

std::map<std::string, TokenizerFactory>& registry() {
  static std::map<std::string, TokenizerFactory> factories = {
      {"words",
       [](const TokenizerSpec& spec, const std::string&) -> std::unique_ptr<Tokenizer> {
         return std::make_unique<WordTokenizer>(spec.vocab, spec.length);
       }},
  };
  return factories;
}

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

WordTokenizer::WordTokenizer(std::vector<std::string> vocab, int64_t length)
    : vocab_(std::move(vocab)), length_(length) {
  if (length_ < 1) {
    throw Error(ErrorKind::Tokenizer, "the word tokenizer's length must be positive, got " + std::to_string(length_));
  }
  if (vocab_.size() < 3) {
    throw Error(ErrorKind::Tokenizer, "the word tokenizer's vocabulary lacks <pad>, <start>, <unk>");
  }
  for (const std::string& w : vocab_) {
    for (char ch : w) {
      if (static_cast<unsigned char>(ch) >= 0x80) {
        throw Error(ErrorKind::Tokenizer, "vocabulary word '" + w +
                                              "' is not ASCII; the native word tokenizer reproduces Python's "
                                              "lower() for ASCII vocabularies only");
      }
    }
  }
}

std::vector<std::string> WordTokenizer::words(const std::string& prompt) const {
  std::vector<std::string> out;
  std::string current;
  bool in_word = false;
  for (uint32_t c : decode_utf8(prompt)) {
    if (c == ',' || is_python_space(c)) {
      if (in_word) {
        out.push_back(current);
        current.clear();
        in_word = false;
      }
      continue;
    }
    in_word = true;
    if (c >= 'A' && c <= 'Z') {
      current += static_cast<char>(c - 'A' + 'a');
    } else if (c == 0x212a) {  // KELVIN SIGN: Python lowers it to ASCII 'k'
      current += 'k';
    } else {
      append_utf8(current, c);  // other letters lower to non-ASCII text, which an ASCII vocabulary never holds
    }
  }
  if (in_word) {
    out.push_back(current);
  }
  return out;
}

std::vector<int64_t> WordTokenizer::encode(const std::string& prompt) const {
  // Python builds {word: i for i, word in enumerate(vocab)}: a repeated word maps to its last index.
  std::unordered_map<std::string, int64_t> index;
  for (size_t i = 0; i < vocab_.size(); ++i) {
    index[vocab_[i]] = static_cast<int64_t>(i);
  }
  std::vector<int64_t> ids{kStart};
  for (const std::string& w : words(prompt)) {
    auto it = index.find(w);
    ids.push_back(it == index.end() ? kUnknown : it->second);
  }
  ids.resize(static_cast<size_t>(length_), kPad);
  return ids;
}

void register_tokenizer(const std::string& kind, TokenizerFactory factory) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[kind] = std::move(factory);
}

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec, const std::string& bundle_dir) {
  TokenizerFactory factory;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(spec.kind);
    if (it == registry().end()) {
      std::string known;
      for (const auto& [k, _] : registry()) {
        known += (known.empty() ? "" : ", ") + k;
      }
      throw Error(ErrorKind::Tokenizer,
                  "the bundle's tokenizer kind '" + spec.kind + "' is not built into this runtime (it has " + known + ")");
    }
    factory = it->second;
  }
  return factory(spec, bundle_dir);
}

}  // namespace elasticdit
