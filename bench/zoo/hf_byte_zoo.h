// The benchmark zoo in Hugging Face form (`twin-zoo --size lite|full --format hf`): the pipeline
// of byte_zoo.h (same data, presets, seeds, training loops and splits) with the RoBERTa byte
// model of hf_byte_model.h, writing model directories instead of TorchScript files:
//
//   OUT/base/                      the pretrained encoder with a 2-class placeholder head
//   OUT/<task>/                    experts; each directory holds config.json,
//                                  model.safetensors, tokenizer.json, tokenizer_config.json
//   OUT/<task>.router.safetensors  input_ids, attention_mask from the train split
//   OUT/<task>.test.safetensors    input_ids, attention_mask, labels from the test split
//   OUT/merge.yaml                 base_model: base, models: <task>, n-gram router; no
//                                  tokenizer section, so the merge job publishes base/'s
//   OUT/zoo.md                     sizes, timings, validation accuracies, native parity
//
// Every id in OUT was produced by OUT/base/tokenizer.json loaded through HfTokenizer, the
// tokenizer the merge job and the server use. After writing each expert the zoo loads its
// directory with LoadHfModel and runs the native forward on the validation rows against the
// trained TorchScript module (HfByteZooReport::parity, zoo.md).
//
// Thread-safety: free functions; not to be run concurrently on the same output directory.
#ifndef TWIN_BENCH_ZOO_HF_BYTE_ZOO_H_
#define TWIN_BENCH_ZOO_HF_BYTE_ZOO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/zoo/byte_transformer.h"
#include "bench/zoo/byte_zoo.h"
#include "core/text/hf_tokenizer.h"

namespace twin::zoo {

inline constexpr char kHfBaseDir[] = "base";

// The native forward of a written expert against the trained module, on its validation rows.
struct HfNativeParity {
  double max_abs_diff = 0;   // largest |native logit - TorchScript logit|
  double max_abs_logit = 0;  // largest |TorchScript logit| (the scale of the difference)
};

struct HfByteZooReport {
  ByteZooReport zoo;
  std::vector<HfNativeParity> parity;  // per task, in zoo.tasks' order
};

// `split`'s texts as `tokenizer` encodes them (special tokens added, at most `max_length` ids),
// padded with its pad id to the longest row; labels when the split has them.
absl::StatusOr<TokenizedExamples> HfTokenize(const HfTokenizer& tokenizer, const TextSplit& split,
                                             int64_t max_length);

absl::StatusOr<HfByteZooReport> BuildHfByteZoo(const std::string& data_dir,
                                               const std::string& out_dir,
                                               const ByteZooOptions& options);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_HF_BYTE_ZOO_H_
