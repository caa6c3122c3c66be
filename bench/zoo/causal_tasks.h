// The generative zoo's tasks, each made from one corpus of the byte zoo (DATA.md), as
// (prompt, target) pairs with automatic scores (causal_eval.h):
//
//   task      corpus  prompt                                     target
//   spam      spam    "<message> | spam or ham? "                "spam" or "ham"
//   lang      lang    "<fortune> | language? "                   "en", "de", "es", ...
//   manual    manual  "<the start of a paragraph> " (cut after   the paragraph's next word
//                     a space)
//   brackets  code    "<the start of a 20-line window> | close: " the brackets still open there,
//                                                                innermost first, e.g. ")}"
//   upper     topic   "<the first words of a fortune> | upper: "  those words with ASCII letters
//                                                                in capitals
//
// Texts are made one line (every run of whitespace becomes one space, so that a prompt is a
// line of <task>.router.txt and code reads as it is served in one line) and cut at UTF-8
// character boundaries so that bos + prompt + target + eos fits the model's max_len ids (one id
// a byte). Where a choice is made (manual's cut, brackets' cut) it is a hash of the text, so a
// split always gives the same examples. A text that gives no example (brackets with nothing
// open, or closed wrongly before any opening; a paragraph of one word) is skipped; the others
// keep the split's order.
//
// Thread-safety: plain functions.
#ifndef TWIN_BENCH_ZOO_CAUSAL_TASKS_H_
#define TWIN_BENCH_ZOO_CAUSAL_TASKS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/zoo/byte_zoo.h"
#include "bench/zoo/causal_eval.h"

namespace twin::zoo {

inline constexpr char kDefaultCausalTasks[] = "spam,lang,manual,brackets,upper";

// The corpus `task` is made from ("brackets" -> "code"); INVALID_ARGUMENT naming the known
// tasks for any other name.
absl::StatusOr<std::string> CausalTaskCorpus(const std::string& task);

// The examples of `task` from one split of its corpus (labels: the corpus' label names, which
// split.labels index). INVALID_ARGUMENT for an unknown task or a max_len too small for it.
absl::StatusOr<std::vector<CausalPair>> MakeCausalPairs(const std::string& task,
                                                        const TextSplit& split,
                                                        const std::vector<std::string>& labels,
                                                        int64_t max_len);

// `text` with every run of whitespace replaced by one space, without leading or trailing space.
std::string OneLine(const std::string& text);
// The longest prefix of `text` of at most max_bytes bytes that does not end inside a UTF-8
// character.
std::string CutUtf8(const std::string& text, size_t max_bytes);

}  // namespace twin::zoo

#endif  // TWIN_BENCH_ZOO_CAUSAL_TASKS_H_
