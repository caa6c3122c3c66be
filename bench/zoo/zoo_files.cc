#include "bench/zoo/zoo_files.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin::zoo {

absl::StatusOr<ZooTask> ReadZooTask(const std::string& dir, const std::string& task,
                                    int64_t max_train) {
  ZooTask data;
  data.name = task;
  for (int s = 0; s < 3; ++s) {
    ASSIGN_OR_RETURN(
        data.split[s],
        ReadTsvSplit(absl::StrCat(dir, "/", task, ".", kZooSplits[s], ".tsv"), &data.labels));
  }
  TextSplit& train = data.split[0];
  if (max_train > 0 && static_cast<int64_t>(train.texts.size()) > max_train) {
    train.texts.resize(max_train);
    train.labels.resize(max_train);
  }
  if (data.labels.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("task ", task, ": needs at least 2 labels in ", dir, "/", task, ".train.tsv"));
  }
  return data;
}

std::string YamlQuoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

absl::Status WriteTextFile(const std::string& path, const std::string& content) {
  std::ofstream out(path);
  out << content;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace twin::zoo
