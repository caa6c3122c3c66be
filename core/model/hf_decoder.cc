#include "core/model/hf_decoder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <exception>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/model/internal/activation.h"
#include "core/status_macros.h"

namespace twin {
namespace {

// The score of a hidden key: transformers adds the dtype's lowest value, which gives it
// exactly zero weight.
constexpr float kMaskedScore = std::numeric_limits<float>::lowest();

std::string FirstLine(const char* what) {
  std::string s = what;
  return s.substr(0, s.find('\n'));
}

std::string Layer(int64_t l) { return absl::StrCat("model.layers.", l, "."); }

std::map<std::string, std::vector<int64_t>> Tensors(const HfDecoderConfig& c) {
  const int64_t d = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, ff = c.intermediate_size;
  std::map<std::string, std::vector<int64_t>> t;
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias) {
    t[name + ".weight"] = {out, in};
    if (bias) t[name + ".bias"] = {out};
  };
  t[absl::StrCat(kHfEmbedTokens, ".weight")] = {c.vocab_size, d};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = Layer(l);
    t[p + "input_layernorm.weight"] = {d};
    linear(p + "self_attn.q_proj", q, d, c.qkv_bias);
    linear(p + "self_attn.k_proj", kv, d, c.qkv_bias);
    linear(p + "self_attn.v_proj", kv, d, c.qkv_bias);
    linear(p + "self_attn.o_proj", d, q, c.o_bias);
    t[p + "post_attention_layernorm.weight"] = {d};
    linear(p + "mlp.gate_proj", ff, d, c.mlp_bias);
    linear(p + "mlp.up_proj", ff, d, c.mlp_bias);
    linear(p + "mlp.down_proj", d, ff, c.mlp_bias);
  }
  t["model.norm.weight"] = {d};
  if (!c.tie_word_embeddings) t[absl::StrCat(kHfLmHead, ".weight")] = {c.vocab_size, d};
  return t;
}

// transformers' rotary inverse frequencies, in float32 as it computes them.
at::Tensor InverseFrequencies(const HfDecoderConfig& c) {
  const int64_t dim = c.head_dim;
  const at::Tensor exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / dim;
  at::Tensor inv_freq = 1.0 / at::pow(c.rope_theta, exponent);
  switch (c.rope_scaling) {
    case RopeScaling::kNone:
      return inv_freq;
    case RopeScaling::kLinear:
      return inv_freq / c.rope_factor;
    case RopeScaling::kLlama3: {
      const double old_len = static_cast<double>(c.rope_original_max_positions);
      const double low_wavelen = old_len / c.rope_low_freq_factor;
      const double high_wavelen = old_len / c.rope_high_freq_factor;
      const at::Tensor wavelen = 2 * M_PI / inv_freq;
      at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / c.rope_factor, inv_freq);
      const at::Tensor smooth = (old_len / wavelen - c.rope_low_freq_factor) /
                                (c.rope_high_freq_factor - c.rope_low_freq_factor);
      const at::Tensor smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
      const at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
      return at::where(medium, smoothed, scaled);
    }
  }
  TORCH_CHECK(false, "unknown rope scaling");
}

// x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1] for x = [x1, x2] (halves of the
// last dimension).
at::Tensor Rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

}  // namespace

struct HfDecoder::State {
  at::Tensor inv_freq;  // [head_dim / 2]
};

int64_t KvCache::bytes() const {
  int64_t total = 0;
  for (const at::Tensor& t : keys_) total += t.numel() * static_cast<int64_t>(t.element_size());
  for (const at::Tensor& t : values_) total += t.numel() * static_cast<int64_t>(t.element_size());
  return total;
}

absl::StatusOr<std::unique_ptr<HfDecoder>> HfDecoder::Create(const HfDecoderConfig& config) {
  std::unique_ptr<HfDecoder> decoder(new HfDecoder(config));
  try {
    c10::InferenceMode guard;
    decoder->state_->inv_freq = InverseFrequencies(decoder->config_);
  } catch (const std::exception& e) {
    return decoder->Failed("Create", e);
  }
  return decoder;
}

HfDecoder::HfDecoder(HfDecoderConfig config)
    : config_(std::move(config)), state_(std::make_unique<State>()) {
  spec_.family = HfDecoderFamilyName(config_.family);
  spec_.prefix = "model.";
  spec_.body_modules = {"embed_tokens", "layers", "norm"};
  spec_.shapes = Tensors(config_);
  spec_.ignored_suffixes = {".rotary_emb.inv_freq"};
  // A tied model's checkpoint may still carry the head it shares with the embeddings.
  if (config_.tie_word_embeddings) spec_.ignored_prefixes = {absl::StrCat(kHfLmHead, ".")};
  for (const auto& [name, shape] : spec_.shapes) names_.push_back(name);
}

HfDecoder::~HfDecoder() = default;

const at::Tensor& HfDecoder::inv_freq() const { return state_->inv_freq; }

std::vector<std::vector<std::string>> HfDecoder::linear_groups() const {
  std::vector<std::vector<std::string>> groups;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const std::string p = Layer(l);
    groups.push_back({p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                      p + "self_attn.v_proj.weight"});
    groups.push_back({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"});
  }
  return groups;
}

int64_t HfDecoder::CacheBytes(int64_t capacity) const {
  return 2 * config_.num_hidden_layers * config_.num_key_value_heads * capacity * config_.head_dim *
         static_cast<int64_t>(sizeof(float));
}

absl::StatusOr<KvCache> HfDecoder::NewCache(int64_t capacity) const {
  if (capacity < 1 || capacity > config_.max_position_embeddings) {
    return absl::InvalidArgumentError(
        absl::StrCat(family_name(), ": a cache holds 1 to max_position_embeddings (",
                     config_.max_position_embeddings, ") positions, not ", capacity));
  }
  try {
    c10::InferenceMode guard;
    KvCache cache;
    cache.capacity_ = capacity;
    const std::vector<int64_t> shape = {config_.num_key_value_heads, capacity, config_.head_dim};
    for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
      cache.keys_.push_back(at::empty(shape, at::kFloat));
      cache.values_.push_back(at::empty(shape, at::kFloat));
    }
    return cache;
  } catch (const std::exception& e) {
    return Failed("NewCache", e);
  }
}

at::Tensor HfDecoder::Activation(const at::Tensor& x) const {
  return internal::ApplyActivation(config_.hidden_act, x);
}

absl::Status HfDecoder::Failed(const char* method, const std::exception& e) const {
  return absl::InvalidArgumentError(
      absl::StrCat(family_name(), " ", method, "() failed: ", FirstLine(e.what())));
}

at::Tensor HfDecoder::Attention(int64_t l, const at::Tensor& x, const std::vector<int64_t>& counts,
                                const std::vector<int64_t>& starts, const at::Tensor& cos,
                                const at::Tensor& sin, const LayerParams& params,
                                const std::vector<KvCache*>& caches) const {
  const int64_t batch = x.size(0), n = x.size(1);
  const int64_t heads = config_.num_attention_heads, kv_heads = config_.num_key_value_heads;
  const int64_t head_dim = config_.head_dim, group = config_.kv_group();
  const std::string p = Layer(l) + "self_attn.";
  // [B, n, heads * head_dim] -> [B, heads, n, head_dim]
  auto split = [&](const at::Tensor& t, int64_t h) {
    return t.view({batch, n, h, head_dim}).transpose(1, 2);
  };
  const std::vector<at::Tensor> qkv =
      params.Linears({p + "q_proj", p + "k_proj", p + "v_proj"}, x);
  const at::Tensor q = Rotate(split(qkv[0], heads), cos, sin);
  const at::Tensor k = Rotate(split(qkv[1], kv_heads), cos, sin);
  const at::Tensor v = split(qkv[2], kv_heads);
  const double scale = std::pow(static_cast<double>(head_dim), -0.5);
  bool padded = false;
  for (int64_t count : counts) padded = padded || count < n;
  // Rows past a sequence's own count stay zero (never read by a real row).
  at::Tensor context = padded ? at::zeros({batch, n, heads * head_dim}, x.options())
                              : at::empty({batch, n, heads * head_dim}, x.options());
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t count = counts[b], start = starts[b], total = start + count;
    KvCache& cache = *caches[b];
    cache.keys_[l].narrow(1, start, count).copy_(k[b].narrow(1, 0, count));
    cache.values_[l].narrow(1, start, count).copy_(v[b].narrow(1, 0, count));
    const at::Tensor keys = cache.keys_[l].narrow(1, 0, total);      // [kv_heads, total, hd]
    const at::Tensor values = cache.values_[l].narrow(1, 0, total);  // [kv_heads, total, hd]
    // Query head i reads key/value head i / group: [kv_heads, group * count, head_dim].
    const at::Tensor queries =
        q[b].narrow(1, 0, count).reshape({kv_heads, group * count, head_dim});
    at::Tensor scores = at::bmm(queries, keys.transpose(1, 2)).mul_(scale);
    const bool windowed = config_.sliding_window > 0 && total > config_.sliding_window;
    if (count > 1 || windowed) {
      // Query j (position start + j) sees key t when t <= start + j and, with a window W,
      // t > start + j - W.
      const at::Tensor query_pos = at::arange(start, total, at::kLong).unsqueeze(1);
      const at::Tensor key_pos = at::arange(0, total, at::kLong).unsqueeze(0);
      at::Tensor hidden = key_pos > query_pos;
      if (windowed) hidden = hidden.logical_or(key_pos <= query_pos - config_.sliding_window);
      scores = scores.view({kv_heads, group, count, total})
                   .masked_fill(hidden, kMaskedScore)
                   .view({kv_heads, group * count, total});
    }
    const at::Tensor out = at::bmm(at::softmax(scores, -1), values);  // [kvh, g * count, hd]
    // [heads, count, hd] written as the sequence's rows [count, heads * hd] in one copy.
    context[b].narrow(0, 0, count).view({count, heads, head_dim})
        .copy_(out.view({heads, count, head_dim}).transpose(0, 1));
  }
  return params.Linear(p + "o_proj", context);
}

absl::StatusOr<at::Tensor> HfDecoder::Extend(const std::vector<std::vector<int64_t>>& tokens,
                                             const LayerParams& params,
                                             const std::vector<KvCache*>& caches,
                                             bool all_logits) const {
  const int64_t batch = static_cast<int64_t>(tokens.size());
  if (batch == 0 || caches.size() != tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat(family_name(),
                                                   ": Extend needs one cache per "
                                                   "sequence and at least one sequence; got ",
                                                   batch, " sequences and ", caches.size(),
                                                   " caches"));
  }
  std::set<const KvCache*> seen;
  std::vector<int64_t> counts(batch), starts(batch);
  int64_t n = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const KvCache* cache = caches[b];
    if (cache == nullptr || cache->keys_.size() != static_cast<size_t>(config_.num_hidden_layers)) {
      return absl::InvalidArgumentError(
          absl::StrCat(family_name(), ": sequence ", b, " has no cache made by this model"));
    }
    if (!seen.insert(cache).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(family_name(), ": sequence ", b, "'s cache is also another sequence's"));
    }
    counts[b] = static_cast<int64_t>(tokens[b].size());
    starts[b] = cache->length_;
    if (counts[b] == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(family_name(), ": sequence ", b, " has no new tokens"));
    }
    if (starts[b] + counts[b] > cache->capacity_) {
      return absl::InvalidArgumentError(
          absl::StrCat(family_name(), ": sequence ", b, " would hold ", starts[b] + counts[b],
                       " positions, more than its cache's ", cache->capacity_));
    }
    for (int64_t id : tokens[b]) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat(family_name(), ": sequence ", b, ": token id ", id,
                         " outside the vocabulary [0, ", config_.vocab_size, ")"));
      }
    }
    n = std::max(n, counts[b]);
  }
  try {
    c10::InferenceMode guard;
    at::Tensor ids = at::zeros({batch, n}, at::kLong);
    auto id = ids.accessor<int64_t, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t j = 0; j < counts[b]; ++j) id[b][j] = tokens[b][j];
    }
    const double eps = config_.rms_norm_eps;
    // Rotary angles of the new tokens, positions starts[b] + j, shared by every layer.
    at::Tensor positions = at::empty({batch, n}, at::kFloat);
    auto pos = positions.accessor<float, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t j = 0; j < n; ++j) pos[b][j] = static_cast<float>(starts[b] + j);
    }
    const at::Tensor angles = positions.unsqueeze(-1) * state_->inv_freq;
    const at::Tensor emb = at::cat({angles, angles}, -1).unsqueeze(1);  // [B, 1, n, head_dim]
    const at::Tensor cos = emb.cos(), sin = emb.sin();
    at::Tensor h = params.Embedding(kHfEmbedTokens, ids);
    for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
      const std::string p = Layer(l);
      h = h + Attention(l, params.RmsNorm(p + "input_layernorm", h, eps), counts, starts, cos,
                        sin, params, caches);
      const at::Tensor x = params.RmsNorm(p + "post_attention_layernorm", h, eps);
      const std::vector<at::Tensor> gate_up =
          params.Linears({p + "mlp.gate_proj", p + "mlp.up_proj"}, x);
      const at::Tensor inner = Activation(gate_up[0]) * gate_up[1];
      h = h + params.Linear(p + "mlp.down_proj", inner);
    }
    const char* head = config_.tie_word_embeddings ? kHfEmbedTokens : kHfLmHead;
    at::Tensor logits;
    if (all_logits) {
      logits = params.Linear(head, params.RmsNorm("model.norm", h, eps));
      for (int64_t b = 0; b < batch; ++b) {
        if (counts[b] < n) logits[b].narrow(0, counts[b], n - counts[b]).zero_();
      }
    } else {
      at::Tensor last = at::empty({batch}, at::kLong);
      for (int64_t b = 0; b < batch; ++b) last[b] = counts[b] - 1;
      const at::Tensor rows =
          h.gather(1, last.view({batch, 1, 1}).expand({batch, 1, h.size(2)})).squeeze(1);
      logits = params.Linear(head, params.RmsNorm("model.norm", rows, eps));
    }
    for (int64_t b = 0; b < batch; ++b) caches[b]->length_ += counts[b];
    return logits;
  } catch (const std::exception& e) {
    return Failed("Extend", e);
  }
}

absl::StatusOr<at::Tensor> HfDecoder::Logits(const std::vector<std::vector<int64_t>>& tokens,
                                             const LayerParams& params) const {
  std::vector<KvCache> caches;
  std::vector<KvCache*> pointers;
  caches.reserve(tokens.size());
  for (const auto& sequence : tokens) {
    ASSIGN_OR_RETURN(KvCache cache,
                     NewCache(std::max<int64_t>(1, static_cast<int64_t>(sequence.size()))));
    caches.push_back(std::move(cache));
  }
  for (KvCache& cache : caches) pointers.push_back(&cache);
  return Extend(tokens, params, pointers, /*all_logits=*/true);
}

absl::StatusOr<HfCausalLm> LoadHfCausalLm(const std::string& dir) {
  ASSIGN_OR_RETURN(const HfDecoderConfig config, LoadHfDecoderConfig(dir));
  HfCausalLm lm;
  ASSIGN_OR_RETURN(lm.decoder, HfDecoder::Create(config));
  ASSIGN_OR_RETURN(HfCheckpoint checkpoint, LoadHfCheckpoint(dir, lm.decoder->tensor_spec()));
  lm.weights = std::move(checkpoint.tensors);
  lm.ignored = std::move(checkpoint.ignored);
  return lm;
}

}  // namespace twin
