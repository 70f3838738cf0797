#include "elasticdit/clip_bpe.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <queue>

#include "elasticdit/errors.h"
#include "elasticdit/unicode.h"

namespace elasticdit {

namespace {

Error bad(const std::string& what) { return Error(ErrorKind::Tokenizer, "CLIP tokenizer: " + what); }

uint64_t pair_key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the others to 256, 257, ... in order.
std::vector<std::string> byte_alphabet() {
  std::vector<std::string> out(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool keep = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
    append_utf8(out[b], keep ? b : next++);
  }
  return out;
}

bool starts_with(const CodePoints& text, size_t at, const char* literal) {
  for (size_t k = 0; literal[k]; ++k) {
    if (at + k >= text.size() || text[at + k] != static_cast<unsigned char>(literal[k])) {
      return false;
    }
  }
  return true;
}

// CLIP's pattern <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// (leftmost, first alternative that matches), then GPT-2's byte-level split, which only cuts the two literals.
std::vector<std::string> words(const CodePoints& text) {
  static const char* kLiterals[] = {"<|startoftext|>", "<|endoftext|>"};
  static const char* kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  std::vector<std::string> out;
  auto add = [&](size_t from, size_t to) {
    out.push_back(encode_utf8(CodePoints(text.begin() + static_cast<long>(from), text.begin() + static_cast<long>(to))));
  };
  size_t i = 0;
  while (i < text.size()) {
    bool done = false;
    for (const char* literal : kLiterals) {
      if (starts_with(text, i, literal)) {
        const size_t n = std::char_traits<char>::length(literal);
        add(i, i + 2), add(i + 2, i + n - 2), add(i + n - 2, i + n);  // "<|", the word, "|>"
        i += n, done = true;
        break;
      }
    }
    for (const char* contraction : kContractions) {
      if (!done && starts_with(text, i, contraction)) {
        const size_t n = std::char_traits<char>::length(contraction);
        add(i, i + n);
        i += n, done = true;
      }
    }
    if (done) {
      continue;
    }
    const uint32_t c = text[i];
    size_t end = i + 1;
    if (is_letter(c)) {
      while (end < text.size() && is_letter(text[end])) {
        ++end;
      }
    } else if (is_regex_space(c)) {
      i = end;
      continue;
    } else if (!is_number(c)) {
      while (end < text.size() && !is_letter(text[end]) && !is_number(text[end]) && !is_regex_space(text[end])) {
        ++end;
      }
    }
    add(i, end);
    i = end;
  }
  return out;
}

}  // namespace

ClipBpeTokenizer::ClipBpeTokenizer(const std::string& vocab_json, const std::string& merges_txt, int64_t length,
                                   ClipSpecials specials)
    : byte_symbols_(byte_alphabet()), length_(length) {
  if (length_ < 2) {
    throw bad("length must be at least 2 (bos and eos), got " + std::to_string(length_));
  }
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(vocab_json);
  } catch (const nlohmann::json::parse_error& e) {
    throw bad(std::string("vocab.json is not valid JSON: ") + e.what());
  }
  if (!vocab.is_object()) {
    throw bad("vocab.json must map tokens to integer ids");
  }
  std::unordered_map<int64_t, std::string> token_of;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > 0xffffffffll) {
      throw bad("vocab.json maps '" + token + "' to " + id.dump() + ", not an id");
    }
    vocab_[token] = id.get<int64_t>();
    token_of[id.get<int64_t>()] = token;
  }
  uint32_t rank = 0;
  size_t start = 0, line_no = 0;
  while (start < merges_txt.size()) {
    size_t end = merges_txt.find('\n', start);
    if (end == std::string::npos) {
      end = merges_txt.size();
    }
    std::string line = merges_txt.substr(start, end - start);
    start = end + 1, ++line_no;
    if (!line.empty() && line.back() == '\r') {
      line.pop_back();
    }
    if (line.rfind("#version", 0) == 0) {
      continue;
    }
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      throw bad("merges.txt line " + std::to_string(line_no) + " is not one pair 'A B'");
    }
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    const auto a = vocab_.find(left), b = vocab_.find(right), merged = vocab_.find(left + right);
    if (a == vocab_.end() || b == vocab_.end() || merged == vocab_.end()) {
      throw bad("merges.txt line " + std::to_string(line_no) + " ('" + line + "') names a token vocab.json lacks");
    }
    merges_[pair_key(a->second, b->second)] = Merge{rank++, merged->second};  // a repeated pair: the last rank
  }
  unk_ = specials.unk.value_or(specials.eos);
  bos_ = specials.bos, eos_ = specials.eos, pad_ = specials.pad;
  std::vector<std::string> cut;
  for (int64_t id : {bos_, eos_, unk_, pad_}) {
    auto it = token_of.find(id);
    if (it == token_of.end()) {
      throw bad("no token of vocab.json has the special id " + std::to_string(id));
    }
    cut.push_back(it->second);
  }
  for (const std::string& token : specials.extra) {
    if (!vocab_.count(token)) {
      throw bad("the added token '" + token + "' is not in vocab.json");
    }
    cut.push_back(token);
  }
  for (const std::string& token : cut) {
    if (!token.empty() && std::none_of(added_.begin(), added_.end(), [&](const auto& t) { return t.first == token; })) {
      added_.emplace_back(token, vocab_.at(token));
    }
  }
}

void ClipBpeTokenizer::encode_word(const std::string& word, std::vector<int64_t>& ids) const {
  // Symbols: one per mapped byte (each a whole UTF-8 character of the alphabet), "</w>" on the last one.
  struct Symbol {
    int64_t id;
    long prev, next;
    bool removed;
  };
  if (word.empty()) {
    return;
  }
  std::vector<Symbol> symbols;
  for (size_t k = 0; k < word.size(); ++k) {
    std::string s = byte_symbols_[static_cast<unsigned char>(word[k])];
    if (k + 1 == word.size()) {
      s += "</w>";
    }
    const auto it = vocab_.find(s);
    const long n = static_cast<long>(symbols.size());
    symbols.push_back({it == vocab_.end() ? unk_ : it->second, n - 1, n + 1, false});
  }
  symbols.back().next = -1;
  // tokenizers' Word::merge_all: a queue of (rank, position), lowest rank then leftmost first; stale entries
  // (the pair changed since it was queued) are dropped when they come up.
  struct Entry {
    uint32_t rank;
    long pos;
    int64_t id;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
  auto push = [&](long pos) {
    const Symbol& s = symbols[static_cast<size_t>(pos)];
    if (s.next < 0) {
      return;
    }
    auto it = merges_.find(pair_key(s.id, symbols[static_cast<size_t>(s.next)].id));
    if (it != merges_.end()) {
      queue.push({it->second.rank, pos, it->second.id});
    }
  };
  for (long k = 0; k + 1 < static_cast<long>(symbols.size()); ++k) {
    push(k);
  }
  while (!queue.empty()) {
    const Entry top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (left.removed || left.next < 0) {
      continue;
    }
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.id != top.id) {
      continue;
    }
    left.id = top.id;
    right.removed = true;
    left.next = right.next;
    if (left.next >= 0) {
      symbols[static_cast<size_t>(left.next)].prev = top.pos;
    }
    if (left.prev >= 0) {
      push(left.prev);
    }
    push(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (!s.removed) {
      ids.push_back(s.id);
    }
  }
}

void ClipBpeTokenizer::encode_piece(const std::string& text, std::vector<int64_t>& ids) const {
  CodePoints normal;
  bool in_space = false;
  for (uint32_t c : nfc(decode_utf8(text))) {  // NFC, then \s+ -> " ", then Lowercase
    if (is_regex_space(c)) {
      if (!in_space) {
        normal.push_back(' ');
      }
      in_space = true;
      continue;
    }
    in_space = false;
    normal.push_back(c);
  }
  for (const std::string& word : words(lower(normal))) {
    encode_word(word, ids);
  }
}

std::vector<int64_t> ClipBpeTokenizer::body(const std::string& prompt) const {
  decode_utf8(prompt);  // a malformed prompt is an error before anything is cut out of it
  std::vector<int64_t> ids;
  size_t start = 0, at = 0;
  while (at < prompt.size()) {  // leftmost-longest match of an added token (their texts are whole characters)
    const std::pair<std::string, int64_t>* best = nullptr;
    for (const auto& token : added_) {
      if (prompt.compare(at, token.first.size(), token.first) == 0 &&
          (!best || token.first.size() > best->first.size())) {
        best = &token;
      }
    }
    if (!best) {
      ++at;
      continue;
    }
    encode_piece(prompt.substr(start, at - start), ids);
    ids.push_back(best->second);
    at += best->first.size();
    start = at;
  }
  encode_piece(prompt.substr(start), ids);
  return ids;
}

std::vector<int64_t> ClipBpeTokenizer::encode(const std::string& prompt) const {
  std::vector<int64_t> tokens = body(prompt);
  tokens.resize(std::min(tokens.size(), static_cast<size_t>(length_ - 2)));
  std::vector<int64_t> ids{bos_};
  ids.insert(ids.end(), tokens.begin(), tokens.end());
  ids.push_back(eos_);
  ids.resize(static_cast<size_t>(length_), pad_);
  return ids;
}

}  // namespace elasticdit
