#include "elasticdit/tokenizer.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "elasticdit/clip_bpe.h"
#include "elasticdit/errors.h"
#include "elasticdit/files.h"
#include "elasticdit/unicode.h"

namespace elasticdit {

namespace {

// The tokenizer block of a manifest (or of a part of one): its JSON, and a named error for a bad key.
nlohmann::json spec_json(const TokenizerSpec& spec) {
  try {
    return nlohmann::json::parse(spec.json);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(ErrorKind::Tokenizer, std::string("the tokenizer block is not valid JSON: ") + e.what());
  }
}

int64_t integer(const nlohmann::json& block, const char* key, const std::string& kind) {
  if (!block.contains(key) || !block.at(key).is_number_integer()) {
    throw Error(ErrorKind::Tokenizer, "the " + kind + " tokenizer needs an integer '" + key + "'");
  }
  return block.at(key).get<int64_t>();
}

// A file the tokenizer block names, read from inside the bundle (no absolute path, no "..").
std::string bundle_file(const nlohmann::json& block, const char* key, const std::string& kind,
                        const std::string& bundle_dir) {
  if (!block.contains(key) || !block.at(key).is_string()) {
    throw Error(ErrorKind::Tokenizer, "the " + kind + " tokenizer needs a file '" + key + "'");
  }
  const std::string rel = block.at(key).get<std::string>();
  if (rel.empty() || rel[0] == '/' || rel.find("..") != std::string::npos) {
    throw Error(ErrorKind::Tokenizer, "the " + kind + " tokenizer's " + key + " '" + rel + "' is outside the bundle");
  }
  const std::string path = join_path(bundle_dir, rel);
  if (!is_file(path)) {
    throw Error(ErrorKind::Tokenizer, "the " + kind + " tokenizer's " + key + " '" + rel + "' is missing");
  }
  return read_file(path);
}

std::unique_ptr<Tokenizer> make_clip_bpe(const TokenizerSpec& spec, const std::string& bundle_dir) {
  const nlohmann::json block = spec_json(spec);
  ClipSpecials specials;
  specials.bos = integer(block, "bos", "clip_bpe");
  specials.eos = integer(block, "eos", "clip_bpe");
  specials.pad = integer(block, "pad", "clip_bpe");
  if (block.contains("unk")) {
    specials.unk = integer(block, "unk", "clip_bpe");
  }
  if (block.contains("extra_tokens")) {
    const nlohmann::json& extra = block.at("extra_tokens");
    if (!extra.is_array() || !std::all_of(extra.begin(), extra.end(), [](const auto& t) { return t.is_string(); })) {
      throw Error(ErrorKind::Tokenizer, "the clip_bpe tokenizer's 'extra_tokens' must be a list of strings");
    }
    specials.extra = extra.get<std::vector<std::string>>();
  }
  return std::make_unique<ClipBpeTokenizer>(bundle_file(block, "vocab", "clip_bpe", bundle_dir),
                                            bundle_file(block, "merges", "clip_bpe", bundle_dir),
                                            integer(block, "length", "clip_bpe"), specials);
}

// "concat": each part's ids in order (SD3: CLIP-L, CLIP-G, T5), one row for encode_text.
class ConcatTokenizer : public Tokenizer {
 public:
  explicit ConcatTokenizer(std::vector<std::unique_ptr<Tokenizer>> parts) : parts_(std::move(parts)) {}
  std::vector<int64_t> encode(const std::string& prompt) const override {
    std::vector<int64_t> ids;
    for (const auto& part : parts_) {
      std::vector<int64_t> row = part->encode(prompt);
      ids.insert(ids.end(), row.begin(), row.end());
    }
    return ids;
  }

 private:
  std::vector<std::unique_ptr<Tokenizer>> parts_;
};

std::unique_ptr<Tokenizer> make_concat(const TokenizerSpec& spec, const std::string& bundle_dir) {
  const nlohmann::json block = spec_json(spec);
  if (!block.contains("parts") || !block.at("parts").is_array() || block.at("parts").empty()) {
    throw Error(ErrorKind::Tokenizer, "the concat tokenizer needs a non-empty list 'parts'");
  }
  std::vector<std::unique_ptr<Tokenizer>> parts;
  for (const nlohmann::json& part : block.at("parts")) {
    parts.push_back(make_tokenizer(parse_tokenizer_spec(part.dump()), bundle_dir));
  }
  return std::make_unique<ConcatTokenizer>(std::move(parts));
}

std::map<std::string, TokenizerFactory>& registry() {
  static std::map<std::string, TokenizerFactory> factories = {
      {"words",
       [](const TokenizerSpec& spec, const std::string&) -> std::unique_ptr<Tokenizer> {
         return std::make_unique<WordTokenizer>(spec.vocab, spec.length);
       }},
      {"clip_bpe", make_clip_bpe},
      {"concat", make_concat},
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

TokenizerSpec parse_tokenizer_spec(const std::string& json_text) {
  TokenizerSpec spec;
  spec.json = json_text;
  const nlohmann::json block = spec_json(spec);
  if (!block.is_object() || !block.contains("kind") || !block.at("kind").is_string()) {
    throw Error(ErrorKind::Tokenizer, "a tokenizer block needs a string 'kind'");
  }
  spec.kind = block.at("kind").get<std::string>();
  if (block.contains("length")) {
    spec.length = integer(block, "length", spec.kind);
  }
  if (block.contains("vocab") && block.at("vocab").is_array()) {
    for (const nlohmann::json& w : block.at("vocab")) {
      if (!w.is_string()) {
        throw Error(ErrorKind::Tokenizer, "the " + spec.kind + " tokenizer's vocabulary holds a non-string");
      }
      spec.vocab.push_back(w.get<std::string>());
    }
  }
  return spec;
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
