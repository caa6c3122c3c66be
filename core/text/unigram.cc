#include "core/text/unigram.h"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "absl/strings/str_cat.h"

namespace twin {
namespace {

// SentencePiece's and Rust's penalty of an unknown character under the lowest piece score.
constexpr double kUnknownPenalty = 10.0;

// The byte offset of each code point of valid UTF-8 `text`, and text.size() at the end.
std::vector<size_t> CharStarts(absl::string_view text) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<uint8_t>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  starts.push_back(text.size());
  return starts;
}

struct Best {
  double score = 0;
  int64_t id = -1;   // the last piece; -1: no path reaches this position yet
  size_t start = 0;  // where it starts (code points)
};

}  // namespace

absl::StatusOr<std::unique_ptr<Unigram>> Unigram::Create(
    std::vector<std::pair<std::string, double>> pieces, std::optional<int64_t> unk_id,
    bool byte_fallback, absl::string_view what) {
  if (unk_id && (*unk_id < 0 || *unk_id >= static_cast<int64_t>(pieces.size()))) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unk_id ", *unk_id,
                                                   " is not one of the ", pieces.size(),
                                                   " pieces"));
  }
  std::unique_ptr<Unigram> u(new Unigram);
  u->unk_id_ = unk_id.value_or(-1);
  u->byte_fallback_ = byte_fallback;
  u->byte_ids_.assign(256, -1);
  double min_score = std::numeric_limits<double>::infinity();
  for (size_t id = 0; id < pieces.size(); ++id) {
    const std::string& piece = pieces[id].first;
    if (piece.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": piece ", id, " is empty"));
    if (!u->vocab_.emplace(piece, static_cast<int64_t>(id)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": piece ", id, " \"", piece, "\" occurs twice"));
    }
    u->scores_.push_back(pieces[id].second);
    min_score = std::min(min_score, pieces[id].second);
    u->max_piece_chars_ = std::max(u->max_piece_chars_, CharStarts(piece).size() - 1);
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (auto it = u->vocab_.find(name); it != u->vocab_.end()) u->byte_ids_[b] = it->second;
  }
  u->unk_score_ = min_score - kUnknownPenalty;
  return u;
}

absl::Status Unigram::Tokenize(absl::string_view text, std::vector<int64_t>* ids) const {
  const std::vector<size_t> starts = CharStarts(text);
  const size_t n = starts.size() - 1;
  if (n == 0) return absl::OkStatus();
  // The id of the unknown token in `best`: the model's, or a value no piece has.
  const int64_t unknown_id = unk_id_ >= 0 ? unk_id_ : static_cast<int64_t>(scores_.size());
  std::vector<Best> best(n + 1);
  best[0].id = unknown_id;  // reached; the id is not used
  auto offer = [&](size_t from, size_t to, int64_t id, double score) {
    const double total = best[from].score + score;
    if (best[to].id < 0 || total > best[to].score) best[to] = Best{total, id, from};
  };
  for (size_t i = 0; i < n; ++i) {
    bool single = false;
    const size_t longest = std::min(max_piece_chars_, n - i);
    for (size_t len = 1; len <= longest; ++len) {
      auto it = vocab_.find(text.substr(starts[i], starts[i + len] - starts[i]));
      if (it == vocab_.end()) continue;
      offer(i, i + len, it->second, scores_[it->second]);
      single |= len == 1;
    }
    if (!single) {
      if (unk_id_ < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the text's character \"", text.substr(starts[i], starts[i + 1] - starts[i]),
            "\" is in no Unigram piece and the model has no unk_id"));
      }
      offer(i, i + 1, unk_id_, unk_score_);
    }
  }
  // Back from the end, as Rust does: consecutive unknown tokens are fused into one string,
  // then each string is its piece, else its <0xNN> bytes (byte_fallback), else unknown.
  std::vector<absl::string_view> strings;  // last first
  bool last_unknown = false;
  for (size_t end = n; end > 0; end = best[end].start) {
    const size_t from = starts[best[end].start];
    const bool unknown = best[end].id == unknown_id;
    if (unknown && last_unknown) {
      absl::string_view& run = strings.back();
      run = text.substr(from, run.size() + (starts[end] - from));
    } else {
      strings.push_back(text.substr(from, starts[end] - from));
    }
    last_unknown = unknown;
  }
  for (auto it = strings.rbegin(); it != strings.rend(); ++it) {
    if (auto v = vocab_.find(*it); v != vocab_.end()) {
      ids->push_back(v->second);
      continue;
    }
    bool bytes = byte_fallback_;
    for (char c : *it) bytes = bytes && byte_ids_[static_cast<uint8_t>(c)] >= 0;
    if (!bytes) {
      ids->push_back(unk_id_);
      continue;
    }
    for (char c : *it) ids->push_back(byte_ids_[static_cast<uint8_t>(c)]);
  }
  return absl::OkStatus();
}

}  // namespace twin
