#include "bench/zoo/causal_eval.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin::zoo {
namespace {

// Each example's cross-entropy summed over its target, for examples[begin, end).
absl::Status TargetLoss(const HfDecoder& decoder, const ExampleParams& params,
                        const std::vector<CausalExample>& examples, size_t begin, size_t end,
                        std::vector<ExampleScore>* scores) {
  std::vector<std::vector<int64_t>> rows;
  std::vector<size_t> index;
  for (size_t i = begin; i < end; ++i) {
    std::vector<int64_t> row = examples[i].prompt;
    row.insert(row.end(), examples[i].target.begin(), examples[i].target.end() - 1);
    rows.push_back(std::move(row));
    index.push_back(i);
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const LayerParams> weights, params(index));
  ASSIGN_OR_RETURN(at::Tensor logits, decoder.Logits(rows, *weights));
  try {
    c10::InferenceMode guard;
    const at::Tensor log_probs = at::log_softmax(logits, -1);
    for (size_t i = begin; i < end; ++i) {
      const CausalExample& e = examples[i];
      // The logits after prompt token p - 1 + k predict target token k.
      const int64_t first = static_cast<int64_t>(e.prompt.size()) - 1;
      const int64_t n = static_cast<int64_t>(e.target.size());
      const at::Tensor target = at::tensor(e.target, at::kLong).unsqueeze(1);
      (*scores)[i].loss =
          -log_probs[i - begin].narrow(0, first, n).gather(1, target).sum().item<double>();
    }
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("scoring the targets failed: ", e.what()));
  }
}

// Which of examples[begin, end) the greedy continuation reproduces. A sequence stops decoding
// at its first wrong token.
absl::Status GreedyMatches(const HfDecoder& decoder, const ExampleParams& params,
                           const std::vector<CausalExample>& examples, size_t begin, size_t end,
                           std::vector<ExampleScore>* scores) {
  std::vector<KvCache> caches;
  std::vector<size_t> active;  // examples still matching, not yet complete
  std::vector<int64_t> produced(end - begin, 0);
  for (size_t i = begin; i < end; ++i) {
    const int64_t need =
        static_cast<int64_t>(examples[i].prompt.size() + examples[i].target.size());
    ASSIGN_OR_RETURN(KvCache cache, decoder.NewCache(std::min(need, decoder.max_positions())));
    caches.push_back(std::move(cache));
    active.push_back(i);
  }
  std::vector<std::vector<int64_t>> tokens;
  for (size_t i : active) tokens.push_back(examples[i].prompt);
  while (!active.empty()) {
    std::vector<KvCache*> pointers;
    for (size_t i : active) pointers.push_back(&caches[i - begin]);
    ASSIGN_OR_RETURN(std::shared_ptr<const LayerParams> weights, params(active));
    ASSIGN_OR_RETURN(at::Tensor logits, decoder.Extend(tokens, *weights, pointers));
    std::vector<int64_t> next;
    try {
      c10::InferenceMode guard;
      const at::Tensor best = logits.argmax(-1).contiguous();
      next.assign(best.data_ptr<int64_t>(), best.data_ptr<int64_t>() + best.numel());
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("greedy decoding failed: ", e.what()));
    }
    std::vector<size_t> still;
    tokens.clear();
    for (size_t j = 0; j < active.size(); ++j) {
      const size_t i = active[j];
      const std::vector<int64_t>& target = examples[i].target;
      const int64_t token = next[j];
      int64_t& k = produced[i - begin];
      if (token != target[k]) continue;
      if (++k == static_cast<int64_t>(target.size())) {
        (*scores)[i].exact = true;
        continue;
      }
      still.push_back(i);
      tokens.push_back({token});
    }
    active = std::move(still);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> CausalPairsJsonl(const std::vector<CausalPair>& pairs) {
  std::string out;
  for (size_t i = 0; i < pairs.size(); ++i) {
    try {
      const nlohmann::ordered_json row = {{"prompt", pairs[i].prompt}, {"target", pairs[i].target}};
      absl::StrAppend(&out, row.dump(), "\n");
    } catch (const std::exception& e) {  // text that is not UTF-8
      return absl::InvalidArgumentError(absl::StrCat("example ", i, ": ", e.what()));
    }
  }
  return out;
}

absl::StatusOr<std::vector<CausalPair>> ReadCausalPairsJsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::vector<CausalPair> pairs;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.empty()) continue;
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!row.is_object() || !row.contains("prompt") || !row["prompt"].is_string() ||
        !row.contains("target") || !row["target"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": expected {\"prompt\": string, \"target\": string}"));
    }
    pairs.push_back({row["prompt"].get<std::string>(), row["target"].get<std::string>()});
  }
  return pairs;
}

absl::StatusOr<std::vector<CausalExample>> EncodeCausalPairs(const HfTokenizer& tokenizer,
                                                             const std::vector<CausalPair>& pairs,
                                                             int64_t eos_id, int64_t max_len) {
  std::vector<CausalExample> examples;
  HfEncodeOptions plain;
  plain.add_special_tokens = false;
  for (size_t i = 0; i < pairs.size(); ++i) {
    ASSIGN_OR_RETURN(HfEncoding prompt, tokenizer.Encode(pairs[i].prompt));
    ASSIGN_OR_RETURN(HfEncoding target, tokenizer.Encode(pairs[i].target, plain));
    CausalExample e{std::move(prompt.ids), std::move(target.ids)};
    e.target.push_back(eos_id);
    if (e.prompt.empty() || static_cast<int64_t>(e.prompt.size() + e.target.size()) > max_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("example ", i, ": prompt (", e.prompt.size(), " ids) and target (",
                       e.target.size(), " ids with eos) must be 1 to ", max_len, " ids together"));
    }
    examples.push_back(std::move(e));
  }
  return examples;
}

absl::StatusOr<CausalScores> ScoreCausalLm(const HfDecoder& decoder, const LayerParams& params,
                                           const std::vector<CausalExample>& examples,
                                           const CausalEvalOptions& options) {
  // Not owned: the caller's params outlive the call.
  const std::shared_ptr<const LayerParams> shared(std::shared_ptr<void>(), &params);
  return ScoreCausalLm(
      decoder, [&](const std::vector<size_t>&) { return shared; }, examples, options);
}

absl::StatusOr<CausalScores> ScoreCausalLm(const HfDecoder& decoder, const ExampleParams& params,
                                           const std::vector<CausalExample>& examples,
                                           const CausalEvalOptions& options,
                                           std::vector<ExampleScore>* per_example) {
  if (examples.empty() || options.batch_size < 1) {
    return absl::InvalidArgumentError("scoring needs examples and a positive batch size");
  }
  CausalScores scores;
  for (const CausalExample& e : examples) {
    if (e.prompt.empty() || e.target.empty()) {
      return absl::InvalidArgumentError("scoring needs a prompt and a target in every example");
    }
    scores.target_tokens += static_cast<int64_t>(e.target.size());
  }
  std::vector<ExampleScore> each(examples.size());
  const size_t batch = static_cast<size_t>(options.batch_size);
  for (size_t begin = 0; begin < examples.size(); begin += batch) {
    const size_t end = std::min(examples.size(), begin + batch);
    RETURN_IF_ERROR(TargetLoss(decoder, params, examples, begin, end, &each));
    RETURN_IF_ERROR(GreedyMatches(decoder, params, examples, begin, end, &each));
  }
  double loss = 0;
  int64_t matches = 0;
  for (const ExampleScore& e : each) {
    loss += e.loss;
    matches += e.exact ? 1 : 0;
  }
  scores.examples = static_cast<int64_t>(examples.size());
  scores.exact_match = static_cast<double>(matches) / scores.examples;
  scores.mean_loss = loss / scores.target_tokens;
  if (per_example != nullptr) *per_example = std::move(each);
  return scores;
}

}  // namespace twin::zoo
