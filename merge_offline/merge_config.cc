#include "merge_offline/merge_config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/store/artifact_set.h"
#include "core/status_macros.h"
#include "core/yaml_fields.h"

namespace twin {
namespace {

const YamlFields& Fields() {
  static const YamlFields* fields = new YamlFields("merge config");
  return *fields;
}

std::string Resolve(const std::string& base_dir, const std::string& p) {
  if (p.empty() || p[0] == '/' || p.find("://") != std::string::npos) return p;
  return (std::filesystem::path(base_dir) / p).lexically_normal().string();
}

absl::Status ParseExpert(const YAML::Node& node, const std::string& path, const std::string& dir,
                         const ExpertConfig& defaults, ExpertConfig* e) {
  RETURN_IF_ERROR(
      Fields().CheckKeys(node, path, {"model", "name", "labels", "router_data", "parameters"}));
  *e = defaults;
  RETURN_IF_ERROR(Fields().Read(node, "model", path, &e->path));
  if (e->path.empty()) return Fields().Bad(path + ".model", "is required");
  e->path = Resolve(dir, e->path);
  RETURN_IF_ERROR(Fields().Read(node, "name", path, &e->name));
  if (e->name.empty()) e->name = std::filesystem::path(e->path).stem().string();
  RETURN_IF_ERROR(Fields().Read(node, "labels", path, &e->labels));
  RETURN_IF_ERROR(Fields().Read(node, "router_data", path, &e->router_data));
  if (e->router_data.empty()) {
    return Fields().Bad(path + ".router_data",
                        "is required (labeled examples to train the router)");
  }
  e->router_data = Resolve(dir, e->router_data);
  if (const YAML::Node p = node["parameters"]) {
    const std::string pp = path + ".parameters";
    RETURN_IF_ERROR(Fields().CheckKeys(p, pp, {"weight", "density", "drop_rate"}));
    RETURN_IF_ERROR(Fields().Read(p, "weight", pp, &e->weight));
    RETURN_IF_ERROR(Fields().Read(p, "density", pp, &e->density));
    RETURN_IF_ERROR(Fields().Read(p, "drop_rate", pp, &e->drop_rate));
  }
  return absl::OkStatus();
}

absl::Status ParseTwin(const YAML::Node& node, MergeJobConfig* c) {
  RETURN_IF_ERROR(Fields().CheckKeys(
      node, "twin",
      {"rank_policy", "ratio", "rank", "energy", "budget_bytes", "dtype", "from_layer"}));
  RETURN_IF_ERROR(Fields().Read(node, "from_layer", "twin", &c->twin_from_layer));
  if (c->twin_from_layer < 0) return Fields().Bad("twin.from_layer", "must be >= 0");
  std::string kind = RankPolicyKindName(c->rank_policy.kind);
  RETURN_IF_ERROR(Fields().Read(node, "rank_policy", "twin", &kind));
  auto parsed = ParseRankPolicyKind(kind);
  if (!parsed.ok()) return Fields().Bad("twin.rank_policy", std::string(parsed.status().message()));
  c->rank_policy.kind = *parsed;
  RETURN_IF_ERROR(Fields().Read(node, "ratio", "twin", &c->rank_policy.ratio));
  RETURN_IF_ERROR(Fields().Read(node, "rank", "twin", &c->rank_policy.rank));
  RETURN_IF_ERROR(Fields().Read(node, "energy", "twin", &c->rank_policy.energy));
  RETURN_IF_ERROR(Fields().Read(node, "budget_bytes", "twin", &c->rank_policy.budget_bytes));
  std::string dtype = "f32";
  RETURN_IF_ERROR(Fields().Read(node, "dtype", "twin", &dtype));
  if (dtype == "f32" || dtype == "F32") {
    c->twin_dtype = "F32";
  } else if (dtype == "f16" || dtype == "F16") {
    c->twin_dtype = "F16";
  } else {
    return Fields().Bad("twin.dtype", absl::StrCat("'", dtype, "' is not f32 or f16"));
  }
  absl::Status valid = ValidateRankPolicy(c->rank_policy);
  if (!valid.ok()) return Fields().Bad("twin", std::string(valid.message()));
  return absl::OkStatus();
}

absl::Status ParseRouter(const YAML::Node& node, MergeJobConfig* c) {
  RETURN_IF_ERROR(Fields().CheckKeys(node, "router",
                                     {"hidden_dim", "layers", "dropout", "max_epochs", "batch_size",
                                      "learning_rate", "weight_decay", "validation_fraction",
                                      "patience", "max_examples_per_task", "balance_tasks",
                                      "features", "ngram"}));
  RETURN_IF_ERROR(Fields().Read(node, "features", "router", &c->router_features));
  if (c->router_features != "auto" && c->router_features != "model" &&
      c->router_features != "ngram" && c->router_features != "prefix") {
    return Fields().Bad("router.features", absl::StrCat("'", c->router_features,
                                                        "' is not auto, model, ngram or prefix"));
  }
  if (const YAML::Node g = node["ngram"]) {
    RETURN_IF_ERROR(Fields().CheckKeys(g, "router.ngram", {"max_order", "buckets"}));
    RETURN_IF_ERROR(Fields().Read(g, "max_order", "router.ngram", &c->router_ngram.max_order));
    RETURN_IF_ERROR(Fields().Read(g, "buckets", "router.ngram", &c->router_ngram.buckets));
  }
  if (c->router_ngram.max_order < 1 || c->router_ngram.max_order > kMaxNgramOrder) {
    return Fields().Bad("router.ngram.max_order",
                        absl::StrCat("must be in [1, ", kMaxNgramOrder, "]"));
  }
  if (c->router_ngram.buckets < 1 || c->router_ngram.buckets > kMaxNgramBuckets) {
    return Fields().Bad("router.ngram.buckets",
                        absl::StrCat("must be in [1, ", kMaxNgramBuckets, "]"));
  }
  RouterTrainOptions& r = c->router;
  RETURN_IF_ERROR(Fields().Read(node, "hidden_dim", "router", &r.hidden_dim));
  RETURN_IF_ERROR(Fields().Read(node, "layers", "router", &r.num_hidden_layers));
  RETURN_IF_ERROR(Fields().Read(node, "dropout", "router", &r.dropout));
  RETURN_IF_ERROR(Fields().Read(node, "max_epochs", "router", &r.max_epochs));
  RETURN_IF_ERROR(Fields().Read(node, "batch_size", "router", &r.batch_size));
  RETURN_IF_ERROR(Fields().Read(node, "learning_rate", "router", &r.learning_rate));
  RETURN_IF_ERROR(Fields().Read(node, "weight_decay", "router", &r.weight_decay));
  RETURN_IF_ERROR(Fields().Read(node, "validation_fraction", "router", &r.validation_fraction));
  RETURN_IF_ERROR(Fields().Read(node, "patience", "router", &r.patience));
  RETURN_IF_ERROR(Fields().Read(node, "balance_tasks", "router", &r.balance_tasks));
  RETURN_IF_ERROR(
      Fields().Read(node, "max_examples_per_task", "router", &c->router_max_examples_per_task));
  if (r.hidden_dim < 0) return Fields().Bad("router.hidden_dim", "must be >= 0");
  if (r.num_hidden_layers < 1) return Fields().Bad("router.layers", "must be >= 1");
  if (r.dropout < 0 || r.dropout >= 1) return Fields().Bad("router.dropout", "must be in [0, 1)");
  if (r.max_epochs < 1) return Fields().Bad("router.max_epochs", "must be >= 1");
  if (r.batch_size < 1) return Fields().Bad("router.batch_size", "must be >= 1");
  if (!(r.learning_rate > 0)) return Fields().Bad("router.learning_rate", "must be > 0");
  if (r.weight_decay < 0) return Fields().Bad("router.weight_decay", "must be >= 0");
  if (!(r.validation_fraction > 0 && r.validation_fraction < 1)) {
    return Fields().Bad("router.validation_fraction", "must be in (0, 1)");
  }
  if (r.patience < 1) return Fields().Bad("router.patience", "must be >= 1");
  if (c->router_max_examples_per_task < 2) {
    return Fields().Bad("router.max_examples_per_task", "must be >= 2");
  }
  return absl::OkStatus();
}

}  // namespace

MergeOptions MergeJobConfig::ToMergeOptions() const {
  MergeOptions o;
  o.method = method;
  o.lambda = lambda;
  o.seed = seed;
  for (const auto& e : experts) {
    o.weights.push_back(e.weight);
    o.densities.push_back(e.density);
    o.drop_rates.push_back(e.drop_rate);
  }
  return o;
}

absl::StatusOr<MergeJobConfig> ParseMergeConfig(const std::string& yaml_text,
                                                const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("merge config: bad YAML: ", e.what()));
  }
  if (!root || root.IsNull()) return absl::InvalidArgumentError("merge config: empty document");
  RETURN_IF_ERROR(Fields().CheckKeys(
      root, "",
      {"merge_method", "base_model", "architecture", "models", "parameters", "head_pattern",
       "tokenizer", "twin", "router", "output", "version", "seed", "threads"}));
  MergeJobConfig c;
  std::string method = "task_arithmetic";
  RETURN_IF_ERROR(Fields().Read(root, "merge_method", "", &method));
  auto parsed_method = ParseMergeMethod(method);
  if (!parsed_method.ok()) {
    return Fields().Bad("merge_method", std::string(parsed_method.status().message()));
  }
  c.method = *parsed_method;
  c.lambda = DefaultLambda(c.method);

  RETURN_IF_ERROR(Fields().Read(root, "base_model", "", &c.base_model));
  if (c.base_model.empty()) return Fields().Bad("base_model", "is required");
  c.base_model = Resolve(base_dir, c.base_model);
  RETURN_IF_ERROR(Fields().Read(root, "architecture", "", &c.architecture));
  if (!c.architecture.empty()) c.architecture = Resolve(base_dir, c.architecture);

  ExpertConfig defaults;
  if (const YAML::Node p = root["parameters"]) {
    RETURN_IF_ERROR(
        Fields().CheckKeys(p, "parameters", {"lambda", "weight", "density", "drop_rate"}));
    RETURN_IF_ERROR(Fields().Read(p, "lambda", "parameters", &c.lambda));
    RETURN_IF_ERROR(Fields().Read(p, "weight", "parameters", &defaults.weight));
    RETURN_IF_ERROR(Fields().Read(p, "density", "parameters", &defaults.density));
    RETURN_IF_ERROR(Fields().Read(p, "drop_rate", "parameters", &defaults.drop_rate));
  }

  const YAML::Node models = root["models"];
  if (!models || !models.IsSequence())
    return Fields().Bad("models", "is required and must be a list");
  std::set<std::string> names;
  for (size_t i = 0; i < models.size(); ++i) {
    ExpertConfig e;
    const std::string path = absl::StrCat("models[", i, "]");
    RETURN_IF_ERROR(ParseExpert(models[i], path, base_dir, defaults, &e));
    if (!std::regex_match(e.name, std::regex("[A-Za-z0-9_.-]{1,64}"))) {
      return Fields().Bad(path + ".name",
                          absl::StrCat("'", e.name, "' must match [A-Za-z0-9_.-]{1,64}"));
    }
    if (!names.insert(e.name).second) {
      return Fields().Bad(path + ".name", absl::StrCat("duplicate task name '", e.name, "'"));
    }
    c.experts.push_back(std::move(e));
  }
  if (c.experts.size() < 2) {
    return Fields().Bad("models", absl::StrCat("needs at least 2 experts, got ", c.experts.size()));
  }
  absl::Status merge_ok = ValidateMergeOptions(c.ToMergeOptions(), c.experts.size());
  if (!merge_ok.ok()) return Fields().Bad("parameters", std::string(merge_ok.message()));

  c.head_pattern_given = static_cast<bool>(root["head_pattern"]);
  RETURN_IF_ERROR(Fields().Read(root, "head_pattern", "", &c.head_pattern));
  try {
    std::regex check(c.head_pattern);
  } catch (const std::regex_error& e) {
    return Fields().Bad("head_pattern", absl::StrCat("bad regular expression: ", e.what()));
  }

  if (const YAML::Node t = root["tokenizer"]) {
    c.tokenizer_given = true;
    RETURN_IF_ERROR(
        Fields().CheckKeys(t, "tokenizer", {"type", "max_length", "pad_id", "bos_id", "offset"}));
    RETURN_IF_ERROR(Fields().Read(t, "type", "tokenizer", &c.tokenizer.type));
    RETURN_IF_ERROR(Fields().Read(t, "max_length", "tokenizer", &c.tokenizer.max_length));
    RETURN_IF_ERROR(Fields().Read(t, "pad_id", "tokenizer", &c.tokenizer.pad_id));
    RETURN_IF_ERROR(Fields().Read(t, "bos_id", "tokenizer", &c.tokenizer.bos_id));
    RETURN_IF_ERROR(Fields().Read(t, "offset", "tokenizer", &c.tokenizer.offset));
  }
  if (const YAML::Node t = root["twin"]) RETURN_IF_ERROR(ParseTwin(t, &c));
  if (const YAML::Node r = root["router"]) RETURN_IF_ERROR(ParseRouter(r, &c));

  RETURN_IF_ERROR(Fields().Read(root, "output", "", &c.output));
  if (!c.output.empty() && c.output.find("://") == std::string::npos) {
    c.output = Resolve(base_dir, c.output);
  }
  RETURN_IF_ERROR(Fields().Read(root, "version", "", &c.version));
  if (!c.version.empty()) {
    absl::Status v = ValidateVersionName(c.version);
    if (!v.ok()) return Fields().Bad("version", std::string(v.message()));
  }
  RETURN_IF_ERROR(Fields().Read(root, "seed", "", &c.seed));
  RETURN_IF_ERROR(Fields().Read(root, "threads", "", &c.threads));
  if (c.threads < 0) return Fields().Bad("threads", "must be >= 0");
  return c;
}

absl::StatusOr<MergeJobConfig> LoadMergeConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("merge config ", path, " cannot be read"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = ParseMergeConfig(ss.str(), std::filesystem::absolute(path).parent_path().string());
  if (!config.ok()) return Annotate(config.status(), path);
  return config;
}

}  // namespace twin
