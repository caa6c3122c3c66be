#include "core/model/generation.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "";
}

struct ContinuousBatch::Sequence {
  Sequence(GenerationRequest r, KvCache c, TokenSampler s)
      : request(std::move(r)), cache(std::move(c)), sampler(std::move(s)) {}

  GenerationRequest request;
  KvCache cache;
  TokenSampler sampler;
  size_t prompt_read = 0;  // prompt tokens already in the cache
  std::vector<int64_t> generated;
  bool cancelled = false;

  bool prefilling() const { return prompt_read < request.prompt.size(); }
  // The reason generation ends after `generated`'s last token, or kNone.
  FinishReason Finished() const {
    const int64_t last = generated.back();
    const auto& stops = request.stop_token_ids;
    if (std::find(stops.begin(), stops.end(), last) != stops.end()) return FinishReason::kStop;
    for (const auto& s : request.stop_token_sequences) {
      if (!s.empty() && s.size() <= generated.size() &&
          std::equal(s.begin(), s.end(), generated.end() - static_cast<ptrdiff_t>(s.size()))) {
        return FinishReason::kStop;
      }
    }
    if (static_cast<int64_t>(generated.size()) >= request.max_new_tokens) {
      return FinishReason::kLength;
    }
    // The last token must enter the cache before the next can be predicted.
    if (cache.length() >= cache.capacity()) return FinishReason::kLength;
    return FinishReason::kNone;
  }
};

ContinuousBatch::ContinuousBatch(const HfDecoder& decoder, ContinuousBatchOptions options)
    : decoder_(decoder), options_(options) {
  options_.max_step_tokens = std::max<int64_t>(1, options_.max_step_tokens);
  options_.max_sequences = std::max<int64_t>(1, options_.max_sequences);
}

ContinuousBatch::~ContinuousBatch() = default;

int64_t ContinuousBatch::RequestPositions(const HfDecoder& decoder,
                                          const GenerationRequest& request) {
  return std::min(static_cast<int64_t>(request.prompt.size()) + request.max_new_tokens,
                  decoder.max_positions());
}

int64_t ContinuousBatch::RequestBytes(const HfDecoder& decoder, const GenerationRequest& request) {
  return decoder.CacheBytes(RequestPositions(decoder, request));
}

bool ContinuousBatch::FitsNow(const GenerationRequest& request) const {
  return kv_bytes_ + RequestBytes(decoder_, request) <= options_.kv_budget_bytes;
}

absl::StatusOr<uint64_t> ContinuousBatch::Add(GenerationRequest request) {
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt == 0) return absl::InvalidArgumentError("prompt: empty");
  if (prompt >= decoder_.max_positions()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt: ", prompt, " tokens, the model's context holds ",
                     decoder_.max_positions(), " positions and needs one more to generate"));
  }
  if (request.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens: must be at least 1, not ", request.max_new_tokens));
  }
  for (int64_t id : request.prompt) {
    if (id < 0 || id >= decoder_.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt: token id ", id, " outside the vocabulary [0, ", decoder_.vocab_size(), ")"));
    }
  }
  ASSIGN_OR_RETURN(TokenSampler sampler, TokenSampler::Create(request.sampling));
  const int64_t bytes = RequestBytes(decoder_, request);
  if (bytes > options_.kv_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the sequence's KV cache (", bytes, " bytes for ", RequestPositions(decoder_, request),
        " positions) is larger than the whole KV budget (", options_.kv_budget_bytes,
        " bytes); ask for fewer tokens"));
  }
  if (kv_bytes_ + bytes > options_.kv_budget_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache budget full: ", kv_bytes_, " of ", options_.kv_budget_bytes,
                     " bytes held by ", sequences_.size(), " sequences, this one needs ", bytes));
  }
  ASSIGN_OR_RETURN(KvCache cache, decoder_.NewCache(RequestPositions(decoder_, request)));
  const uint64_t id = next_id_++;
  kv_bytes_ += cache.bytes();
  sequences_.emplace(
      id, std::make_unique<Sequence>(std::move(request), std::move(cache), std::move(sampler)));
  return id;
}

void ContinuousBatch::Cancel(uint64_t id) {
  auto it = sequences_.find(id);
  if (it != sequences_.end()) it->second->cancelled = true;
}

absl::StatusOr<std::vector<GenerationEvent>> ContinuousBatch::Step(const ParamsFor& params_for) {
  std::vector<GenerationEvent> events;
  auto remove = [&](std::map<uint64_t, std::unique_ptr<Sequence>>::iterator it) {
    kv_bytes_ -= it->second->cache.bytes();
    return sequences_.erase(it);
  };
  for (auto it = sequences_.begin(); it != sequences_.end();) {
    if (!it->second->cancelled) {
      ++it;
      continue;
    }
    const Sequence& s = *it->second;
    events.push_back({it->first, s.request.tag, -1, FinishReason::kCancelled,
                      static_cast<int64_t>(s.request.prompt.size()),
                      static_cast<int64_t>(s.generated.size()), false});
    it = remove(it);
  }
  // Decoding sequences first (one token each: inter-token latency), then prompt chunks with
  // what the step has left, in the order the sequences joined.
  std::vector<uint64_t> ids;
  std::vector<std::vector<int64_t>> tokens;
  int64_t budget = options_.max_step_tokens;
  for (auto& [id, s] : sequences_) {
    if (s->prefilling() || budget < 1 || static_cast<int64_t>(ids.size()) >= options_.max_sequences)
      continue;
    ids.push_back(id);
    tokens.push_back({s->generated.back()});
    --budget;
  }
  for (auto& [id, s] : sequences_) {
    if (!s->prefilling() || budget < 1 ||
        static_cast<int64_t>(ids.size()) >= options_.max_sequences)
      continue;
    const auto& prompt = s->request.prompt;
    const int64_t take = std::min<int64_t>(budget, prompt.size() - s->prompt_read);
    ids.push_back(id);
    tokens.emplace_back(prompt.begin() + s->prompt_read, prompt.begin() + s->prompt_read + take);
    budget -= take;
  }
  if (ids.empty()) return events;
  auto fail = [&](const absl::Status& status) {
    for (uint64_t id : ids) {
      if (auto it = sequences_.find(id); it != sequences_.end()) remove(it);
    }
    decode_params_.reset();
    return status;
  };
  // Decoding rows [0, split) and prompt rows [split, n) run as two forwards when a step has
  // both: one padded batch would compute every decoding row at the longest chunk's length.
  size_t split = 0;
  while (split < ids.size() && !sequences_.at(ids[split])->prefilling()) ++split;
  std::vector<at::Tensor> group_logits;
  for (const auto& [begin, end] : {std::pair<size_t, size_t>{0, split}, {split, ids.size()}}) {
    if (begin == end) continue;
    std::vector<StepRow> rows;
    std::vector<KvCache*> caches;
    std::vector<std::vector<int64_t>> group_tokens(tokens.begin() + begin, tokens.begin() + end);
    for (size_t i = begin; i < end; ++i) {
      Sequence& s = *sequences_.at(ids[i]);
      rows.push_back({&s.request.weights, s.request.task});
      caches.push_back(&s.cache);
    }
    std::shared_ptr<const LayerParams> params;
    const bool decode_group = begin == 0 && split > 0;
    if (decode_group && options_.reuse_decode_params && decode_params_ != nullptr &&
        decode_rows_.size() == rows.size() &&
        std::equal(rows.begin(), rows.end(), decode_rows_.begin(),
                   [](const StepRow& a, const std::pair<std::vector<double>, int>& b) {
                     return *a.weights == b.first && a.task == b.second;
                   })) {
      params = decode_params_;
    } else {
      absl::StatusOr<std::unique_ptr<LayerParams>> made = params_for(rows);
      if (!made.ok()) return fail(made.status());
      params = std::shared_ptr<const LayerParams>(std::move(*made));
      if (decode_group && options_.reuse_decode_params) {
        decode_params_ = params;
        decode_rows_.clear();
        for (const StepRow& row : rows) decode_rows_.emplace_back(*row.weights, row.task);
      }
    }
    absl::StatusOr<at::Tensor> logits = decoder_.Extend(group_tokens, *params, caches);
    if (!logits.ok()) return fail(logits.status());
    group_logits.push_back(*std::move(logits));
  }
  const at::Tensor logits = group_logits.size() == 1 ? group_logits[0] : at::cat(group_logits, 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = sequences_.find(ids[i]);
    Sequence& s = *it->second;
    if (s.prefilling()) {
      s.prompt_read += tokens[i].size();
      if (s.prefilling()) continue;  // more of the prompt next step
    }
    absl::StatusOr<int64_t> next = s.sampler.Next(logits[static_cast<int64_t>(i)]);
    if (!next.ok()) return fail(next.status());
    s.generated.push_back(*next);
    GenerationEvent e{ids[i],
                      s.request.tag,
                      *next,
                      s.Finished(),
                      static_cast<int64_t>(s.request.prompt.size()),
                      static_cast<int64_t>(s.generated.size()),
                      s.generated.size() == 1};
    events.push_back(e);
    if (e.finish != FinishReason::kNone) remove(it);
  }
  return events;
}

}  // namespace twin
