// The byte tokenizer on arbitrary specs and texts. The input's first 16 bytes are the spec
// (max_length, pad_id, bos_id, offset: little-endian int32 each; type "bytes"), the rest is
// texts separated by NUL bytes. Invariants for an accepted spec: every id is within
// [0, LargestTokenId(spec)], rows are [bos] + bytes + pad, the mask marks the real tokens, and
// nothing is longer than max_length.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/text/tokenizer.h"
#include "tests/fuzz/fuzz_target.h"

namespace {

int32_t ReadInt32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  int32_t out;
  std::memcpy(&out, &v, sizeof(out));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kSpecBytes = 16;
  if (size < kSpecBytes) return 0;
  twin::TokenizerSpec spec;
  spec.type = "bytes";
  spec.max_length = ReadInt32(data);
  spec.pad_id = ReadInt32(data + 4);
  spec.bos_id = ReadInt32(data + 8);
  spec.offset = ReadInt32(data + 12);
  // Bounded so that one input stays small (the limit itself is a unit test).
  if (spec.max_length > 4096) spec.max_length = 2 + spec.max_length % 4095;
  auto tokenizer = twin::Tokenizer::Create(spec);
  FUZZ_NOTE(tokenizer.status().ToString());
  if (!tokenizer.ok()) {
    FUZZ_CHECK_EXPLAINED(tokenizer.status());
    return 0;
  }
  std::vector<std::string> texts;
  std::string rest(reinterpret_cast<const char*>(data + kSpecBytes), size - kSpecBytes);
  size_t start = 0;
  for (size_t nul; (nul = rest.find('\0', start)) != std::string::npos; start = nul + 1) {
    texts.push_back(rest.substr(start, nul - start));
  }
  texts.push_back(rest.substr(start));

  auto batch = (*tokenizer)->Encode(texts);
  FUZZ_CHECK(batch.ok(), "an accepted tokenizer refused texts");
  const at::Tensor& ids = batch->input_ids;
  const at::Tensor& mask = batch->attention_mask;
  FUZZ_CHECK(ids.dim() == 2 && ids.sizes() == mask.sizes(), "ids and mask shapes differ");
  FUZZ_CHECK(ids.size(0) == static_cast<int64_t>(texts.size()), "one row per text");
  FUZZ_CHECK(ids.size(1) >= 1 && ids.size(1) <= spec.max_length, "row length out of range");
  const absl::Status in_vocab =
      twin::CheckTokenIds(ids, twin::LargestTokenId(spec) + 1, "input_ids");
  FUZZ_CHECK(in_vocab.ok(), "an id above LargestTokenId(spec)");

  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  const int64_t bos = spec.bos_id >= 0 ? 1 : 0;
  for (int64_t b = 0; b < ids.size(0); ++b) {
    const std::string& text = texts[b];
    const int64_t real = std::min<int64_t>(static_cast<int64_t>(text.size()) + bos, ids.size(1));
    for (int64_t p = 0; p < ids.size(1); ++p) {
      FUZZ_CHECK(mask_a[b][p] == (p < real ? 1 : 0), "the mask does not mark the real tokens");
      int64_t expected = spec.pad_id;
      if (p < real) {
        expected = (bos && p == 0) ? spec.bos_id
                                   : static_cast<unsigned char>(text[p - bos]) + spec.offset;
      }
      FUZZ_CHECK(ids_a[b][p] == expected, "an id is not [bos] + byte + offset, then pad");
    }
  }
  return 0;
}
