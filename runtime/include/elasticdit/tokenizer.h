// Prompt -> token ids for the bundle's `encode_text` method. The manifest's tokenizer block names a kind; each
// kind has a factory. Built in: "words" (the demo's word tokenizer, exactly `text_encoder.tokenize` in the
// Python package), "clip_bpe" (CLIP's byte-level BPE from the bundle's vocab.json and merges.txt: clip_bpe.h) and
// "concat" (the parts' ids in order: SD3's CLIP-L | CLIP-G | T5 row). Another kind plugs in with
// `register_tokenizer` without touching the pipeline.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "elasticdit/manifest.h"

namespace elasticdit {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Exactly `length` ids (padded or truncated as the kind does), ready for encode_text's int64 [1, L] input.
  virtual std::vector<int64_t> encode(const std::string& prompt) const = 0;
};

// `prompt.lower().replace(",", " ").split()` -> `<start>`, each word's index (unknown: `<unk>`), `<pad>` up to
// `length`. Python's lower() and split() are Unicode-aware: split() breaks at every code point str.isspace()
// accepts, and lower() maps non-ASCII letters to non-ASCII letters except KELVIN SIGN (U+212A -> 'k'). So for
// an ASCII vocabulary (checked at construction) a word matches iff its ASCII-lowered form, with U+212A as 'k',
// is in the vocabulary: the ids equal Python's for every valid UTF-8 prompt.
class WordTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kPad = 0, kStart = 1, kUnknown = 2;
  WordTokenizer(std::vector<std::string> vocab, int64_t length);
  std::vector<int64_t> encode(const std::string& prompt) const override;
  std::vector<std::string> words(const std::string& prompt) const;  // the lowered words, for tests

 private:
  std::vector<std::string> vocab_;
  int64_t length_;
};

using TokenizerFactory = std::function<std::unique_ptr<Tokenizer>(const TokenizerSpec& spec,
                                                                  const std::string& bundle_dir)>;

// A tokenizer block (JSON text): its kind, and `length` and `vocab` where given; Error(Tokenizer) when it is no
// object with a string "kind".
TokenizerSpec parse_tokenizer_spec(const std::string& json_text);

// Adds (or replaces) the factory for a tokenizer kind.
void register_tokenizer(const std::string& kind, TokenizerFactory factory);

// The tokenizer the manifest names; Error(Tokenizer) for a kind nobody registered.
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec, const std::string& bundle_dir);

}  // namespace elasticdit
