#include "core/text/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "core/text/internal/hf_config.h"
#include "core/text/internal/unicode.h"

namespace twin {

using text_internal::DecoderState;
using text_internal::MetaspaceOptions;
using text_internal::PreTokenizerStep;
using text_internal::TokenizerPipeline;

namespace {

bool Exists(const std::string& path) { return std::filesystem::exists(path); }

void WhitespaceSplit(std::u32string_view text, std::vector<std::u32string>* out) {
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text_internal::IsWhitespace(text[i])) {
      if (i > start) out->emplace_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
}

// Metaspace: ' ' becomes the replacement, then one is prepended to a piece that does not start
// with one (so " a" is "▁a", as in Rust), and with `split` each piece starts at a replacement.
void MetaspaceSplit(std::u32string_view text, const MetaspaceOptions& options, bool text_start,
                    std::vector<std::u32string>* out) {
  std::u32string s;
  const bool prepend = options.prepend == MetaspaceOptions::Prepend::kAlways ||
                       (options.prepend == MetaspaceOptions::Prepend::kFirst && text_start);
  if (prepend && !text.empty() && text[0] != options.replacement && text[0] != ' ') {
    s.push_back(options.replacement);
  }
  for (char32_t c : text) s.push_back(c == ' ' ? options.replacement : c);
  if (!options.split) {
    if (!s.empty()) out->push_back(std::move(s));
    return;
  }
  size_t start = 0;
  for (size_t i = 1; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == options.replacement) {
      out->push_back(s.substr(start, i - start));
      start = i;
    }
  }
}

// Applies the pre-tokenizers in order (each to every piece of the one before), then the model.
// `text_start`: `text` begins the input (no added token before it).
absl::Status EncodePlain(const TokenizerPipeline& p, std::u32string_view text, bool text_start,
                         std::vector<int64_t>* ids) {
  std::vector<std::u32string> pieces{std::u32string(text)};
  std::vector<std::string> utf8;
  bool byte_level = false;
  for (const PreTokenizerStep& step : p.pre_tokenizers) {
    std::vector<std::u32string> next;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const std::u32string& piece = pieces[i];
      switch (step.kind) {
        case PreTokenizerStep::Kind::kBert:
          for (auto& w : BertPreTokenize(piece)) next.push_back(std::move(w));
          break;
        case PreTokenizerStep::Kind::kWhitespaceSplit:
          WhitespaceSplit(piece, &next);
          break;
        case PreTokenizerStep::Kind::kSplit:
          for (auto& w : SplitWithPattern(step.split, piece)) next.push_back(std::move(w));
          break;
        case PreTokenizerStep::Kind::kMetaspace:
          MetaspaceSplit(piece, step.metaspace, text_start && i == 0, &next);
          break;
        case PreTokenizerStep::Kind::kByteLevel:
          for (auto& w : ByteLevelPreTokenize(piece, step.byte_level)) utf8.push_back(std::move(w));
          byte_level = true;
          break;
      }
    }
    pieces = std::move(next);
  }
  if (!byte_level) {
    for (const auto& piece : pieces) utf8.push_back(text_internal::EncodeUtf8(piece));
  }
  for (size_t i = 0; i < utf8.size(); ++i) {
    if (p.wordpiece) {
      if (byte_level) {
        auto cps = text_internal::DecodeUtf8(utf8[i], "piece");
        if (cps.ok()) p.wordpiece->Tokenize(*cps, ids);
      } else {
        p.wordpiece->Tokenize(pieces[i], ids);
      }
    } else if (p.unigram) {
      RETURN_IF_ERROR(p.unigram->Tokenize(utf8[i], ids));
    } else {
      p.bpe->Tokenize(utf8[i], ids);
    }
  }
  return absl::OkStatus();
}

}  // namespace

HfTokenizer::HfTokenizer(std::unique_ptr<const TokenizerPipeline> pipeline)
    : pipeline_(std::move(pipeline)) {}
HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromTokenizerJson(
    absl::string_view json, absl::string_view what) {
  ASSIGN_OR_RETURN(auto pipeline, text_internal::ParseTokenizerJson(json, what));
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(pipeline)));
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  }
  std::unique_ptr<TokenizerPipeline> pipeline;
  const std::string tokenizer_json = dir + "/tokenizer.json";
  if (Exists(tokenizer_json)) {
    ASSIGN_OR_RETURN(std::string text, ReadTokenizerFile(tokenizer_json));
    ASSIGN_OR_RETURN(pipeline, text_internal::ParseTokenizerJson(text, tokenizer_json));
    RETURN_IF_ERROR(text_internal::ApplySpecialTokenFiles(dir, pipeline.get()));
  } else if (Exists(dir + "/tokenizer.model") || Exists(dir + "/spiece.model") ||
             Exists(dir + "/sentencepiece.bpe.model")) {
    ASSIGN_OR_RETURN(pipeline, text_internal::LoadSentencePieceDir(dir));
  } else if (Exists(dir + "/vocab.txt")) {
    ASSIGN_OR_RETURN(pipeline, text_internal::LoadWordPieceDir(dir));
  } else if (Exists(dir + "/vocab.json") || Exists(dir + "/merges.txt")) {
    ASSIGN_OR_RETURN(pipeline, text_internal::LoadByteLevelBpeDir(dir));
  } else {
    return absl::NotFoundError(absl::StrCat(
        dir,
        ": missing file: no tokenizer.json, tokenizer.model, spiece.model, sentencepiece.bpe.model, "
        "vocab.txt or vocab.json + merges.txt"));
  }
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(pipeline)));
}

absl::StatusOr<HfEncoding> HfTokenizer::Encode(absl::string_view text,
                                               const HfEncodeOptions& options) const {
  const TokenizerPipeline& p = *pipeline_;
  const int specials = options.add_special_tokens ? num_special_tokens() : 0;
  if (options.max_length < 0 || (options.max_length > 0 && options.max_length < specials)) {
    return absl::InvalidArgumentError(absl::StrCat("max_length ", options.max_length,
                                                   " leaves no room for the ", specials,
                                                   " special tokens"));
  }
  ASSIGN_OR_RETURN(std::u32string cps, text_internal::DecodeUtf8(text, "text"));
  std::vector<int64_t> content;
  bool text_start = true;
  for (const auto& raw : p.raw_splitter.Split(cps)) {
    if (raw.token != nullptr) {
      content.push_back(raw.token->id);
      text_start = false;
      continue;
    }
    for (const auto& seg : p.normalized_splitter.Split(p.Normalize(raw.text))) {
      if (seg.token != nullptr) {
        content.push_back(seg.token->id);
      } else {
        RETURN_IF_ERROR(EncodePlain(p, seg.text, text_start, &content));
      }
      text_start = false;
    }
  }
  if (options.max_length > 0) {
    content.resize(std::min(content.size(), static_cast<size_t>(options.max_length - specials)));
  }
  HfEncoding out;
  if (options.add_special_tokens) out.ids = p.prefix_ids;
  out.ids.insert(out.ids.end(), content.begin(), content.end());
  if (options.add_special_tokens) out.ids.insert(out.ids.end(), p.suffix_ids.begin(), p.suffix_ids.end());
  out.attention_mask.assign(out.ids.size(), 1);
  return out;
}

absl::StatusOr<std::vector<HfEncoding>> HfTokenizer::EncodeBatch(
    const std::vector<std::string>& texts, const HfEncodeOptions& options) const {
  if (options.pad_to_longest && !pad_id()) {
    return absl::FailedPreconditionError("pad_to_longest: the tokenizer has no pad token");
  }
  std::vector<HfEncoding> out;
  out.reserve(texts.size());
  size_t longest = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto e = Encode(texts[i], options);
    if (!e.ok()) return Annotate(e.status(), absl::StrCat("text ", i));
    longest = std::max(longest, e->ids.size());
    out.push_back(*std::move(e));
  }
  if (options.pad_to_longest) {
    for (HfEncoding& e : out) {
      e.attention_mask.resize(longest, 0);
      e.ids.resize(longest, *pad_id());
    }
  }
  return out;
}

std::vector<std::string> HfTokenizer::TokensOf(const std::vector<int64_t>& ids,
                                               bool skip_special_tokens) const {
  const TokenizerPipeline& p = *pipeline_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    // Ids without a token are dropped, as Hugging Face's decode does.
    if (id < 0 || id >= static_cast<int64_t>(p.id_to_token.size()) || p.id_to_token[id].empty()) {
      continue;
    }
    if (skip_special_tokens && p.is_special[id]) continue;
    tokens.push_back(p.id_to_token[id]);
  }
  return tokens;
}

std::string HfTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  DecoderState state = pipeline_->decoder.NewState();
  return pipeline_->decoder.Run(TokensOf(ids, skip_special_tokens), /*at_end=*/true, &state);
}

HfTokenStream::HfTokenStream(const HfTokenizer* tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      state_(std::make_unique<DecoderState>(tokenizer->pipeline_->decoder.NewState())) {}
HfTokenStream::~HfTokenStream() = default;

std::string HfTokenStream::Push(int64_t id) {
  std::vector<std::string> tokens = tokenizer_->TokensOf({id}, skip_special_tokens_);
  if (tokens.empty()) return "";
  return tokenizer_->pipeline_->decoder.Run(std::move(tokens), /*at_end=*/false, state_.get());
}

std::string HfTokenStream::Finish() {
  std::string rest = tokenizer_->pipeline_->decoder.Run({}, /*at_end=*/true, state_.get());
  *state_ = tokenizer_->pipeline_->decoder.NewState();
  return rest;
}

std::optional<int64_t> HfTokenizer::pad_id() const { return pipeline_->pad_id; }

std::optional<int64_t> HfTokenizer::TokenToId(absl::string_view token) const {
  auto cps = text_internal::DecodeUtf8(token, "token");
  if (cps.ok()) {
    for (const auto& added : pipeline_->added_tokens) {
      if (added.content == *cps) return added.id;
    }
  }
  auto it = pipeline_->vocab().find(token);
  if (it == pipeline_->vocab().end()) return std::nullopt;
  return it->second;
}

int64_t HfTokenizer::vocab_size() const { return pipeline_->vocab_size; }

int HfTokenizer::num_special_tokens() const {
  return static_cast<int>(pipeline_->prefix_ids.size() + pipeline_->suffix_ids.size());
}

}  // namespace twin
