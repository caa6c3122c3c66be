// Helpers both benchmark zoos (byte_zoo.cc, TorchScript; hf_byte_zoo.cc, Hugging Face
// directories) use to read their corpora and write their files.
//
//   ASSIGN_OR_RETURN(ZooTask task, ReadZooTask("bench/zoo/work/data-lite", "spam", 0));
//   RETURN_IF_ERROR(WriteTextFile(out + "/merge.yaml", yaml));
//
// Thread-safety: plain functions.
#ifndef TWIN_BENCH_ZOO_ZOO_FILES_H_
#define TWIN_BENCH_ZOO_ZOO_FILES_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/zoo/byte_zoo.h"

namespace twin::zoo {

// The three splits of a task's corpus, in this order.
inline constexpr char kZooSplits[][12] = {"train", "validation", "test"};

struct ZooTask {
  std::string name;
  std::vector<std::string> labels;  // in order of first appearance over the splits
  TextSplit split[3];               // train, validation, test
};

// DIR/<task>.{train,validation,test}.tsv; the train split cut to its first max_train rows
// (0 = all). Fewer than 2 labels is INVALID_ARGUMENT naming the task.
absl::StatusOr<ZooTask> ReadZooTask(const std::string& dir, const std::string& task,
                                    int64_t max_train);

// `s` as a double-quoted YAML scalar.
std::string YamlQuoted(const std::string& s);

// Writes `content` to `path`; INTERNAL naming the path when it cannot.
absl::Status WriteTextFile(const std::string& path, const std::string& content);

double SecondsSince(std::chrono::steady_clock::time_point start);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_ZOO_FILES_H_
