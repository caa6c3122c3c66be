#include "core/tokenizer.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace twin {
namespace {
constexpr int64_t kByteValues = 256;
}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerSpec& spec) {
  if (spec.type != "bytes") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown tokenizer type '", spec.type, "' (supported: bytes)"));
  }
  if (spec.max_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer max_length must be >= 2, got ", spec.max_length));
  }
  if (spec.offset < 0 || spec.pad_id < 0) {
    return absl::InvalidArgumentError("tokenizer offset and pad_id must be >= 0");
  }
  if (spec.pad_id >= spec.offset && spec.pad_id < spec.offset + kByteValues) {
    return absl::InvalidArgumentError("tokenizer pad_id collides with a byte id");
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(spec));
}

absl::StatusOr<TokenBatch> Tokenizer::Encode(const std::vector<std::string>& texts) const {
  if (texts.empty()) return absl::InvalidArgumentError("no texts to tokenize");
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

}  // namespace twin
