// CLIP's byte-level BPE tokenizer, giving the ids transformers' CLIPTokenizer gives (its Rust `tokenizers`
// pipeline, `padding="max_length", truncation=True`), from the `vocab.json` and `merges.txt` a bundle ships.
//
// The steps, as `tokenizers` runs them: the special tokens (bos, eos, unk, pad and any extra added token: SD3's
// second CLIP pads with "!", so a "!" in a prompt is that token) are cut out of the raw prompt, leftmost-longest;
// each remaining piece is NFC-normalised, runs of whitespace become one space, and it is lower-cased code point by
// code point; CLIP's pattern splits it into words (`<|startoftext|>`, `<|endoftext|>`, 's 't 're 've 'm 'll 'd,
// letter runs, single numbers, runs of anything else; whitespace dropped), and GPT-2's byte-level pattern splits
// the two literal words again ("<|", "startoftext", "|>"); each word's UTF-8 bytes map to GPT-2's printable byte
// alphabet, "</w>" joins the last symbol, symbols missing from the vocabulary become unk, and merges apply by
// rank (lowest first, then leftmost), as `tokenizers`' BPE does on ids. Then bos, at most length - 2 tokens,
// eos, and pad up to `length`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "elasticdit/tokenizer.h"

namespace elasticdit {

struct ClipSpecials {
  int64_t bos = 0, eos = 0, pad = 0;
  std::optional<int64_t> unk;      // default: eos (CLIP's unk token is <|endoftext|>)
  std::vector<std::string> extra;  // other added tokens, cut out of the prompt like the special ones
};

class ClipBpeTokenizer : public Tokenizer {
 public:
  // The texts of vocab.json ({token: id}) and merges.txt ("#version" lines skipped, then "A B" per line).
  // Error(Tokenizer) naming what is wrong: bad JSON, a bad merges line, a merge whose parts or result are not
  // in the vocabulary, a special id no token has, a length below 2.
  ClipBpeTokenizer(const std::string& vocab_json, const std::string& merges_txt, int64_t length,
                   ClipSpecials specials);
  std::vector<int64_t> encode(const std::string& prompt) const override;
  std::vector<int64_t> body(const std::string& prompt) const;  // the tokens alone: no bos/eos, not truncated

 private:
  struct Merge {
    uint32_t rank;
    int64_t id;
  };
  void encode_piece(const std::string& text, std::vector<int64_t>& ids) const;
  void encode_word(const std::string& word, std::vector<int64_t>& ids) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;                // (left id, right id) -> rank, merged id
  std::vector<std::pair<std::string, int64_t>> added_;        // cut out of the raw prompt
  std::vector<std::string> byte_symbols_;                     // GPT-2's byte -> printable character (UTF-8)
  int64_t length_;
  int64_t bos_, eos_, pad_, unk_;
};

}  // namespace elasticdit
