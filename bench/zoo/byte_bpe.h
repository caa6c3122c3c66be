// What the zoo's Hugging Face formats share: a byte-level BPE tokenizer.json without merges
// (every byte one token, so ids and bytes correspond one to one), and writing a model
// directory's files atomically.
//
//   std::string json = ByteBpeTokenizerJson({{0, "<s>"}, {2, "</s>"}}, /*byte_offset=*/4,
//                                           post_processor_json);
//   RETURN_IF_ERROR(WriteFileAtomically(dir + "/tokenizer.json", json));
//
// Thread-safety: plain functions.
#ifndef TWIN_BENCH_ZOO_BYTE_BPE_H_
#define TWIN_BENCH_ZOO_BYTE_BPE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace twin::zoo {

struct ByteBpeSpecial {
  int64_t id;
  std::string content;  // e.g. "<s>", "<|endoftext|>"
};

// tokenizer.json: `specials` as special added tokens (and vocabulary entries), GPT-2's 256
// byte symbols (bytes_to_unicode) at ids byte_offset + b in byte order, a ByteLevel
// pre-tokenizer and decoder without the GPT-2 split or a prefix space, a BPE model without
// merges, and `post_processor_json` (a JSON object, e.g. RobertaProcessing or
// TemplateProcessing) as the post-processor.
std::string ByteBpeTokenizerJson(const std::vector<ByteBpeSpecial>& specials, int64_t byte_offset,
                                 const std::string& post_processor_json);

// Writes path.tmp, then renames it over `path`: a reader never sees half a file. Errors name the
// file.
absl::Status WriteFileAtomically(const std::string& path, const std::string& content);

// Creates `dir` and its parents; INTERNAL naming it when it cannot.
absl::Status MakeDirectories(const std::string& dir);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_BYTE_BPE_H_
