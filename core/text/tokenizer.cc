#include "core/text/tokenizer.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "core/text/hf_tokenizer.h"

namespace twin {
namespace {
constexpr int64_t kByteValues = 256;
// Far above any vocabulary; far below int64 overflow.
constexpr int64_t kMaxTokenId = int64_t{1} << 40;
constexpr int64_t kMaxTokenizerLength = int64_t{1} << 20;
}  // namespace

Tokenizer::Tokenizer(TokenizerSpec spec) : spec_(std::move(spec)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerSpec& spec,
                                                             const std::string& dir) {
  if (spec.type == "hf") {
    if (spec.files.empty()) {
      return absl::InvalidArgumentError("tokenizer type hf names no files");
    }
    if (spec.max_length < 2 || spec.max_length > kMaxTokenizerLength) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer max_length must be in [2, ", kMaxTokenizerLength, "], got ", spec.max_length));
    }
    // Every file in one folder (the manifest's "hf/..." blobs, or a model directory).
    const size_t slash = spec.files.front().rfind('/');
    const std::string sub = slash == std::string::npos ? "" : spec.files.front().substr(0, slash);
    for (const std::string& file : spec.files) {
      const size_t s = file.rfind('/');
      if ((s == std::string::npos ? "" : file.substr(0, s)) != sub) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tokenizer files must share one folder: ", spec.files.front(), " and ", file));
      }
    }
    std::string folder = dir.empty() ? "." : dir;
    if (!sub.empty()) folder = absl::StrCat(folder, "/", sub);
    auto hf = HfTokenizer::Load(folder);
    if (!hf.ok()) return hf.status();
    std::unique_ptr<Tokenizer> tok(new Tokenizer(spec));
    tok->hf_ = std::move(*hf);
    return tok;
  }
  if (spec.type != "bytes") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown tokenizer type '", spec.type, "' (supported: bytes, hf)"));
  }
  if (spec.max_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer max_length must be >= 2, got ", spec.max_length));
  }
  if (spec.max_length > kMaxTokenizerLength) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer max_length is ", spec.max_length,
                                                   "; the limit is ", kMaxTokenizerLength));
  }
  if (spec.offset < 0 || spec.pad_id < 0) {
    return absl::InvalidArgumentError("tokenizer offset and pad_id must be >= 0");
  }
  // Bounded so that offset + 255 and every id fit comfortably in int64 arithmetic.
  if (spec.offset > kMaxTokenId - kByteValues || spec.pad_id > kMaxTokenId ||
      spec.bos_id > kMaxTokenId) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer offset + 255, pad_id and bos_id must be at most ", kMaxTokenId, " (offset ",
        spec.offset, ", pad_id ", spec.pad_id, ", bos_id ", spec.bos_id, ")"));
  }
  if (spec.bos_id < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer bos_id must be -1 (none) or >= 0, got ", spec.bos_id));
  }
  if (spec.pad_id >= spec.offset && spec.pad_id < spec.offset + kByteValues) {
    return absl::InvalidArgumentError("tokenizer pad_id collides with a byte id");
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(spec));
}

int64_t Tokenizer::largest_id() const {
  return hf_ ? hf_->vocab_size() - 1 : LargestTokenId(spec_);
}

absl::StatusOr<TokenBatch> Tokenizer::Encode(const std::vector<std::string>& texts) const {
  if (texts.empty()) return absl::InvalidArgumentError("no texts to tokenize");
  if (hf_) {
    HfEncodeOptions options;
    options.max_length = static_cast<int>(spec_.max_length);
    auto rows = hf_->EncodeBatch(texts, options);
    if (!rows.ok()) return rows.status();
    int64_t longest = 1;
    for (const HfEncoding& e : *rows) longest = std::max<int64_t>(longest, e.ids.size());
    const int64_t batch = static_cast<int64_t>(texts.size());
    at::Tensor ids = at::full({batch, longest}, hf_->pad_id().value_or(0), at::kLong);
    at::Tensor mask = at::zeros({batch, longest}, at::kLong);
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      const HfEncoding& e = (*rows)[static_cast<size_t>(b)];
      for (size_t i = 0; i < e.ids.size(); ++i) {
        ids_a[b][static_cast<int64_t>(i)] = e.ids[i];
        mask_a[b][static_cast<int64_t>(i)] = 1;
      }
    }
    return TokenBatch{ids, mask};
  }
  const int64_t bos = spec_.bos_id >= 0 ? 1 : 0;
  int64_t longest = 1;
  for (const auto& t : texts) {
    longest = std::max<int64_t>(longest, std::min<int64_t>(
                                             static_cast<int64_t>(t.size()) + bos,
                                             spec_.max_length));
  }
  const int64_t batch = static_cast<int64_t>(texts.size());
  at::Tensor ids = at::full({batch, longest}, spec_.pad_id, at::kLong);
  at::Tensor mask = at::zeros({batch, longest}, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const std::string& text = texts[b];
    int64_t pos = 0;
    if (bos) {
      ids_a[b][pos] = spec_.bos_id;
      mask_a[b][pos++] = 1;
    }
    for (size_t i = 0; i < text.size() && pos < longest; ++i) {
      ids_a[b][pos] = static_cast<unsigned char>(text[i]) + spec_.offset;
      mask_a[b][pos++] = 1;
    }
  }
  return TokenBatch{ids, mask};
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::EncodeOne(const std::string& text,
                                                         int64_t max_length) const {
  const int64_t limit = max_length > 0 ? max_length : spec_.max_length;
  if (hf_) {
    HfEncodeOptions options;
    options.max_length = static_cast<int>(std::min<int64_t>(limit, kMaxTokenizerLength));
    auto e = hf_->Encode(text, options);
    if (!e.ok()) return e.status();
    return std::move(e->ids);
  }
  std::vector<int64_t> ids;
  if (spec_.bos_id >= 0) ids.push_back(spec_.bos_id);
  for (size_t i = 0; i < text.size() && static_cast<int64_t>(ids.size()) < limit; ++i) {
    ids.push_back(static_cast<unsigned char>(text[i]) + spec_.offset);
  }
  return ids;
}

namespace {

// "bytes": id - offset is the byte; other ids give nothing.
class ByteTextStream : public TextStream {
 public:
  explicit ByteTextStream(int64_t offset) : offset_(offset) {}
  std::string Push(int64_t id) override {
    if (id < offset_ || id >= offset_ + kByteValues) return "";
    return std::string(1, static_cast<char>(id - offset_));
  }
  std::string Finish() override { return ""; }

 private:
  int64_t offset_;
};

class HfTextStream : public TextStream {
 public:
  explicit HfTextStream(const HfTokenizer* tokenizer) : stream_(tokenizer, true) {}
  std::string Push(int64_t id) override { return stream_.Push(id); }
  std::string Finish() override { return stream_.Finish(); }

 private:
  HfTokenStream stream_;
};

}  // namespace

std::string Tokenizer::Decode(const std::vector<int64_t>& ids) const {
  if (hf_) return hf_->Decode(ids, /*skip_special_tokens=*/true);
  std::unique_ptr<TextStream> stream = NewTextStream();
  std::string text;
  for (int64_t id : ids) text += stream->Push(id);
  return text + stream->Finish();
}

std::unique_ptr<TextStream> Tokenizer::NewTextStream() const {
  if (hf_) return std::make_unique<HfTextStream>(hf_.get());
  return std::make_unique<ByteTextStream>(spec_.offset);
}

int64_t LargestTokenId(const TokenizerSpec& spec) {
  if (spec.type == "hf") return -1;
  return std::max({spec.offset + kByteValues - 1, spec.pad_id, spec.bos_id});
}

absl::Status CheckTokenIds(const at::Tensor& ids, int64_t vocab_size, const std::string& what) {
  try {
    const at::Tensor flat = ids.to(at::kCPU, at::kLong).contiguous().reshape({-1});
    const int64_t* data = flat.data_ptr<int64_t>();
    const int64_t count = flat.numel();
    for (int64_t i = 0; i < count; ++i) {
      if (data[i] < 0 || (vocab_size > 0 && data[i] >= vocab_size)) {
        std::string index = absl::StrCat(i);
        if (ids.dim() == 2) index = absl::StrCat(i / ids.size(1), "][", i % ids.size(1));
        return absl::InvalidArgumentError(absl::StrCat(
            what, "[", index, "] is ", data[i],
            data[i] < 0 ? "; token ids must be >= 0"
                        : absl::StrCat("; the model's vocabulary has ", vocab_size, " ids")));
      }
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace twin
