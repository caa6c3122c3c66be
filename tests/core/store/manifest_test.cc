#include "core/store/manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace twin {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

const std::string kHexA(64, 'a');
const std::string kHexB = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// A manifest with every field set away from its default.
Manifest FullManifest() {
  Manifest m;
  m.version = "v7";
  m.created_at = "2024-05-01T12:34:56Z";
  m.tool_name = "twin-merge-test";
  m.tool_version = "9.8.7";
  m.architecture_blob = "arch/model.pt";
  m.shared_blob = "theta_star.safetensors";
  m.head_pattern = "head\\..*|classifier\\..*";
  m.tokenizer = TokenizerSpec{"none", 256, 3, -1, 7};
  m.embed_dim = 48;
  m.num_parameters = 123456789012;
  m.base_model = SourceRef{"file:///experts/base.pt", kHexB};
  m.merge_method = "ties";
  m.merge_parameters = json{{"lambda", 0.3}, {"density", 0.2}, {"nested", {{"k", "v"}}}};
  m.rank_policy = json{{"policy", "ratio"}, {"ratio", 0.1}};
  m.twin_dtype = "BF16";
  m.tasks = {
      TaskEntry{"spam",
                {"ham", "spam"},
                SourceRef{"s3://b/spam.pt", kHexA},
                "twin/spam.safetensors",
                {"head.weight", "head.bias"}},
      TaskEntry{"lang",
                {"en", "de", "fr"},
                SourceRef{"/experts/lang.pt", ""},
                "twin/lang.safetensors",
                {}},
  };
  m.twin_tensors = {
      TwinTensorEntry{"spam", "encoder.0.weight", {48, 48}, 48, 48, 5, 0.123456789012345, 3.5},
      TwinTensorEntry{"lang", "encoder.conv", {8, 4, 3}, 8, 12, 0, 1.0, 0.0},
  };
  m.router.blob = "router/r.safetensors";
  m.router.features = "route_features";
  m.router.spec = RouterSpec{48, 96, 3, 2, 0.25, 0.02, 1e-6};
  m.router.validation_accuracy = 0.9375;
  m.router.train_examples = 1000;
  m.router.validation_examples = 160;
  m.router.epochs_run = 17;
  m.router.confusion = {{75, 5}, {5, 75}};
  m.report_blob = "docs/report.md";
  m.blobs["theta_star.safetensors"] = BlobRef{kHexA, 1u << 20};
  m.blobs["twin/spam.safetensors"] = BlobRef{kHexB, 5000000000ull};
  return m;
}

void ExpectSameManifest(const Manifest& a, const Manifest& b) {
  EXPECT_EQ(a.schema_version, b.schema_version);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.tool_name, b.tool_name);
  EXPECT_EQ(a.tool_version, b.tool_version);
  EXPECT_EQ(a.architecture_blob, b.architecture_blob);
  EXPECT_EQ(a.shared_blob, b.shared_blob);
  EXPECT_EQ(a.head_pattern, b.head_pattern);
  EXPECT_EQ(a.tokenizer.type, b.tokenizer.type);
  EXPECT_EQ(a.tokenizer.max_length, b.tokenizer.max_length);
  EXPECT_EQ(a.tokenizer.pad_id, b.tokenizer.pad_id);
  EXPECT_EQ(a.tokenizer.bos_id, b.tokenizer.bos_id);
  EXPECT_EQ(a.tokenizer.offset, b.tokenizer.offset);
  EXPECT_EQ(a.embed_dim, b.embed_dim);
  EXPECT_EQ(a.num_parameters, b.num_parameters);
  EXPECT_EQ(a.base_model.uri, b.base_model.uri);
  EXPECT_EQ(a.base_model.sha256, b.base_model.sha256);
  EXPECT_EQ(a.merge_method, b.merge_method);
  EXPECT_EQ(a.merge_parameters, b.merge_parameters);
  EXPECT_EQ(a.rank_policy, b.rank_policy);
  EXPECT_EQ(a.twin_dtype, b.twin_dtype);
  ASSERT_EQ(a.twin_tensors.size(), b.twin_tensors.size());
  for (size_t i = 0; i < a.twin_tensors.size(); ++i) {
    const TwinTensorEntry& x = a.twin_tensors[i];
    const TwinTensorEntry& y = b.twin_tensors[i];
    EXPECT_EQ(x.task, y.task);
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.shape, y.shape);
    EXPECT_EQ(x.rows, y.rows);
    EXPECT_EQ(x.cols, y.cols);
    EXPECT_EQ(x.rank, y.rank);
    EXPECT_EQ(x.rel_error, y.rel_error);  // exact: doubles round-trip through JSON
    EXPECT_EQ(x.delta_norm, y.delta_norm);
  }
  ASSERT_EQ(a.tasks.size(), b.tasks.size());
  for (size_t i = 0; i < a.tasks.size(); ++i) {
    EXPECT_EQ(a.tasks[i].name, b.tasks[i].name);
    EXPECT_EQ(a.tasks[i].labels, b.tasks[i].labels);
    EXPECT_EQ(a.tasks[i].source.uri, b.tasks[i].source.uri);
    EXPECT_EQ(a.tasks[i].source.sha256, b.tasks[i].source.sha256);
    EXPECT_EQ(a.tasks[i].twin_blob, b.tasks[i].twin_blob);
    EXPECT_EQ(a.tasks[i].head_tensors, b.tasks[i].head_tensors);
  }
  EXPECT_EQ(a.router.blob, b.router.blob);
  EXPECT_EQ(a.router.features, b.router.features);
  EXPECT_EQ(a.router.spec.input_dim, b.router.spec.input_dim);
  EXPECT_EQ(a.router.spec.hidden_dim, b.router.spec.hidden_dim);
  EXPECT_EQ(a.router.spec.num_hidden_layers, b.router.spec.num_hidden_layers);
  EXPECT_EQ(a.router.spec.num_tasks, b.router.spec.num_tasks);
  EXPECT_EQ(a.router.spec.dropout, b.router.spec.dropout);
  EXPECT_EQ(a.router.spec.leaky_relu_slope, b.router.spec.leaky_relu_slope);
  EXPECT_EQ(a.router.spec.layer_norm_eps, b.router.spec.layer_norm_eps);
  EXPECT_EQ(a.router.validation_accuracy, b.router.validation_accuracy);
  EXPECT_EQ(a.router.train_examples, b.router.train_examples);
  EXPECT_EQ(a.router.validation_examples, b.router.validation_examples);
  EXPECT_EQ(a.router.epochs_run, b.router.epochs_run);
  EXPECT_EQ(a.router.confusion, b.router.confusion);
  EXPECT_EQ(a.report_blob, b.report_blob);
  ASSERT_EQ(a.blobs.size(), b.blobs.size());
  for (const auto& [name, blob] : a.blobs) {
    ASSERT_EQ(b.blobs.count(name), 1u) << name;
    EXPECT_EQ(blob.sha256, b.blobs.at(name).sha256);
    EXPECT_EQ(blob.size_bytes, b.blobs.at(name).size_bytes);
  }
}

TEST(ManifestTest, RoundTripPreservesEveryField) {
  const Manifest original = FullManifest();
  auto parsed = Manifest::FromJson(original.ToJson());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ExpectSameManifest(original, *parsed);
  EXPECT_EQ(parsed->ToJson(), original.ToJson());
}

TEST(ManifestTest, JsonLayoutIsGroupedSnakeCaseAndIndented) {
  const std::string text = FullManifest().ToJson();
  EXPECT_THAT(text, HasSubstr("\n  \"schema_version\": 1"));
  const json j = json::parse(text);
  EXPECT_EQ(j["version"], "v7");
  EXPECT_EQ(j["tool"]["version"], "9.8.7");
  EXPECT_EQ(j["model"]["architecture"], "arch/model.pt");
  EXPECT_EQ(j["model"]["shared"], "theta_star.safetensors");
  EXPECT_EQ(j["model"]["tokenizer"]["max_length"], 256);
  EXPECT_EQ(j["model"]["base_model"]["sha256"], kHexB);
  EXPECT_EQ(j["merge"]["method"], "ties");
  EXPECT_EQ(j["merge"]["parameters"]["lambda"], 0.3);
  EXPECT_EQ(j["twin"]["dtype"], "BF16");
  EXPECT_EQ(j["twin"]["tensors"][1]["shape"], json({8, 4, 3}));
  EXPECT_EQ(j["tasks"][1]["labels"][2], "fr");
  EXPECT_EQ(j["router"]["spec"]["num_tasks"], 2);
  EXPECT_EQ(j["router"]["confusion"][0][1], 5);
  EXPECT_EQ(j["report"], "docs/report.md");
  EXPECT_EQ(j["blobs"]["twin/spam.safetensors"]["size_bytes"], 5000000000ull);
  // Stable: the same manifest always serialises to the same bytes.
  EXPECT_EQ(text, FullManifest().ToJson());
}

TEST(ManifestTest, UnknownFieldsAreIgnored) {
  json j = json::parse(FullManifest().ToJson());
  j["future_field"] = {{"anything", 1}};
  j["router"]["future_metric"] = 0.5;
  auto parsed = Manifest::FromJson(j.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ExpectSameManifest(FullManifest(), *parsed);
}

TEST(ManifestTest, RouterFeaturesDefaultToEmbedWhenAbsent) {
  json j = json::parse(FullManifest().ToJson());
  ASSERT_EQ(j["router"]["features"], "route_features");
  j["router"].erase("features");  // a manifest written before the field existed
  auto parsed = Manifest::FromJson(j.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->router.features, "embed");
}

// router.features "ngram" carries its parameters, which must match the router's input width.
TEST(ManifestTest, NgramRouterRoundTripsAndIsChecked) {
  Manifest m = FullManifest();
  m.router.features = "ngram";
  m.router.ngram = {2, m.router.spec.input_dim};
  auto parsed = Manifest::FromJson(m.ToJson());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->router.features, "ngram");
  EXPECT_EQ(parsed->router.ngram.max_order, 2);
  EXPECT_EQ(parsed->router.ngram.buckets, m.router.spec.input_dim);
  // Other router inputs write no ngram object.
  EXPECT_FALSE(json::parse(FullManifest().ToJson())["router"].contains("ngram"));
  const std::pair<const char*, std::function<void(json&)>> cases[] = {
      {"router.ngram: is missing", [](json& j) { j["router"].erase("ngram"); }},
      {"router.ngram.max_order: must be in [1, 8]",
       [](json& j) { j["router"]["ngram"]["max_order"] = 0; }},
      {"router.ngram.buckets: must be in [1, 1048576]",
       [](json& j) { j["router"]["ngram"]["buckets"] = int64_t{1} << 21; }},
      {"router.spec.input_dim: must equal ngram.buckets",
       [](json& j) { j["router"]["ngram"]["buckets"] = 3; }},
  };
  for (const auto& [needle, mutate] : cases) {
    json j = json::parse(m.ToJson());
    mutate(j);
    auto bad = Manifest::FromJson(j.dump());
    ASSERT_FALSE(bad.ok()) << needle;
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr(needle));
  }
}

// router.features "prefix" (multi-stage merging) carries the prefix's depth.
TEST(ManifestTest, PrefixRouterRoundTripsAndIsChecked) {
  Manifest m = FullManifest();
  m.router.features = "prefix";
  m.router.prefix_layers = 2;
  auto parsed = Manifest::FromJson(m.ToJson());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->router.features, "prefix");
  EXPECT_EQ(parsed->router.prefix_layers, 2);
  EXPECT_FALSE(json::parse(FullManifest().ToJson())["router"].contains("prefix_layers"));
  const std::pair<const char*, std::function<void(json&)>> cases[] = {
      {"router.prefix_layers: is missing", [](json& j) { j["router"].erase("prefix_layers"); }},
      {"router.prefix_layers: must be in [1, 4096]",
       [](json& j) { j["router"]["prefix_layers"] = 0; }},
      {"router.features: must be \"embed\", \"route_features\", \"ngram\" or \"prefix\"",
       [](json& j) { j["router"]["features"] = "prefixes"; }},
  };
  for (const auto& [needle, mutate] : cases) {
    json j = json::parse(m.ToJson());
    mutate(j);
    auto bad = Manifest::FromJson(j.dump());
    ASSERT_FALSE(bad.ok()) << needle;
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr(needle));
  }
}

TEST(ManifestTest, RejectsTextThatIsNotAJsonObject) {
  auto garbage = Manifest::FromJson("{\"schema_version\": 1,");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(garbage.status().message()), HasSubstr("not valid JSON"));
  auto array = Manifest::FromJson("[1, 2]");
  EXPECT_EQ(array.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(array.status().message()), HasSubstr("must be an object"));
}

// merge.parameters is free-form: nested 100,000 levels it once overflowed the stack when copied.
TEST(ManifestTest, DeepOrOversizedManifestsAreRefused) {
  std::string text = FullManifest().ToJson();
  const std::string anchor = "\"parameters\": {";
  const size_t at = text.find(anchor);
  ASSERT_NE(at, std::string::npos);
  constexpr int kLevels = 100000;
  std::string deep;
  for (int i = 0; i < kLevels; ++i) deep += "{\"a\":";
  deep += "1" + std::string(kLevels, '}') + ",";
  text.insert(at + anchor.size(), "\"deep\": " + deep);
  auto parsed = Manifest::FromJson(text);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("nests deeper than 32 levels"));

  // Within the depth limit it is kept as it was.
  json j = json::parse(FullManifest().ToJson());
  json nested = 1;
  for (int i = 0; i < 20; ++i) nested = json{{"a", nested}};
  j["merge"]["parameters"]["nested"] = nested;
  auto kept = Manifest::FromJson(j.dump());
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->merge_parameters["nested"], nested);

  auto big = Manifest::FromJson(std::string(kMaxManifestBytes + 1, ' '));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("the limit is"));

  j = json::parse(FullManifest().ToJson());
  j["router"]["spec"]["num_hidden_layers"] = int64_t{1} << 50;
  EXPECT_THAT(std::string(Manifest::FromJson(j.dump()).status().message()),
              HasSubstr("router.spec.num_hidden_layers"));
  // Duplicate keys are ambiguous: refused, not resolved silently.
  text = FullManifest().ToJson();
  text.insert(1, "\"version\": \"other\",");
  EXPECT_THAT(std::string(Manifest::FromJson(text).status().message()),
              HasSubstr("'version' appears more than once"));
}

TEST(ManifestTest, OtherSchemaVersionIsFailedPrecondition) {
  json j = json::parse(FullManifest().ToJson());
  j["schema_version"] = 2;
  j.erase("tasks");  // a newer layout: the version mismatch is what gets reported
  auto parsed = Manifest::FromJson(j.dump());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("schema_version 2"));
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("schema_version 1"));
}

struct BadCase {
  std::string expected_path;
  std::function<void(json&)> mutate;
};

TEST(ManifestTest, InvalidFieldsAreReportedByPath) {
  const std::vector<BadCase> cases = {
      {"schema_version", [](json& j) { j.erase("schema_version"); }},
      {"schema_version", [](json& j) { j["schema_version"] = "1"; }},
      {"version", [](json& j) { j.erase("version"); }},
      {"version", [](json& j) { j["version"] = 7; }},
      {"version", [](json& j) { j["version"] = ""; }},
      {"tool.version", [](json& j) { j["tool"].erase("version"); }},
      {"model", [](json& j) { j.erase("model"); }},
      {"model.tokenizer.max_length", [](json& j) { j["model"]["tokenizer"]["max_length"] = "x"; }},
      {"model.embed_dim", [](json& j) { j["model"]["embed_dim"] = -1; }},
      {"model.base_model.sha256", [](json& j) { j["model"]["base_model"]["sha256"] = "abc"; }},
      {"merge.parameters", [](json& j) { j["merge"]["parameters"] = 3; }},
      {"tasks", [](json& j) { j["tasks"] = json::array(); }},
      {"tasks", [](json& j) { j["tasks"] = json::object(); }},
      {"tasks[1]", [](json& j) { j["tasks"][1] = "lang"; }},
      {"tasks[1].name", [](json& j) { j["tasks"][1]["name"] = "spam"; }},
      {"tasks[0].name", [](json& j) { j["tasks"][0]["name"] = ""; }},
      {"tasks[1].labels", [](json& j) { j["tasks"][1]["labels"] = json::array(); }},
      {"tasks[1].labels", [](json& j) { j["tasks"][1].erase("labels"); }},
      {"tasks[0].labels[1]", [](json& j) { j["tasks"][0]["labels"][1] = 1; }},
      {"tasks[0].source.sha256", [](json& j) { j["tasks"][0]["source"]["sha256"] = "zz"; }},
      {"tasks[0].twin_blob", [](json& j) { j["tasks"][0].erase("twin_blob"); }},
      {"twin.tensors[0].task", [](json& j) { j["twin"]["tensors"][0]["task"] = "nope"; }},
      {"twin.tensors[1].shape[0]", [](json& j) { j["twin"]["tensors"][1]["shape"][0] = 1.5; }},
      {"twin.tensors[0].rank", [](json& j) { j["twin"]["tensors"][0]["rank"] = -2; }},
      {"router.spec.input_dim", [](json& j) { j["router"]["spec"]["input_dim"] = 0; }},
      {"router.spec.hidden_dim", [](json& j) { j["router"]["spec"]["hidden_dim"] = -3; }},
      {"router.spec.num_tasks", [](json& j) { j["router"]["spec"]["num_tasks"] = 5; }},
      {"router.spec.dropout", [](json& j) { j["router"]["spec"]["dropout"] = 1.0; }},
      {"router.spec", [](json& j) { j["router"].erase("spec"); }},
      {"router.features", [](json& j) { j["router"]["features"] = "pooler"; }},
      {"router.features", [](json& j) { j["router"]["features"] = 3; }},
      {"router.validation_accuracy", [](json& j) { j["router"]["validation_accuracy"] = 1.5; }},
      {"router.confusion",
       [](json& j) {
         j["router"]["confusion"] = {{1, 2}};
       }},
      {"router.confusion[1]", [](json& j) { j["router"]["confusion"][1] = {1}; }},
      {"report", [](json& j) { j.erase("report"); }},
      {"blobs", [](json& j) { j["blobs"] = json::array(); }},
      {"blobs[\"theta_star.safetensors\"].sha256",
       [](json& j) { j["blobs"]["theta_star.safetensors"]["sha256"] = "abc"; }},
      {"blobs[\"theta_star.safetensors\"].sha256",
       [](json& j) { j["blobs"]["theta_star.safetensors"]["sha256"] = std::string(64, 'A'); }},
      {"blobs[\"theta_star.safetensors\"].size_bytes",
       [](json& j) { j["blobs"]["theta_star.safetensors"]["size_bytes"] = -1; }},
      {"blobs[\"theta_star.safetensors\"].size_bytes",
       [](json& j) { j["blobs"]["theta_star.safetensors"].erase("size_bytes"); }},
      {"blobs[\"../evil\"]",
       [](json& j) {
         j["blobs"]["../evil"] = {{"sha256", kHexA}, {"size_bytes", 1}};
       }},
      {"blobs[\"manifest.json\"]",
       [](json& j) {
         j["blobs"]["manifest.json"] = {{"sha256", kHexA}, {"size_bytes", 1}};
       }},
  };
  for (const BadCase& c : cases) {
    json j = json::parse(FullManifest().ToJson());
    c.mutate(j);
    auto parsed = Manifest::FromJson(j.dump());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.expected_path;
    EXPECT_THAT(std::string(parsed.status().message()),
                HasSubstr("manifest field " + c.expected_path))
        << c.expected_path;
  }
}

TEST(ManifestTest, NativeModelAndTokenizerFilesRoundTripAndAreNamedBlobs) {
  Manifest m = FullManifest();
  EXPECT_FALSE(json::parse(m.ToJson())["model"].contains("native"));
  EXPECT_FALSE(json::parse(m.ToJson())["model"]["tokenizer"].contains("files"));
  m.native = NativeModelEntry{"roberta", "hf/config.json"};
  m.tokenizer.type = "hf";
  m.tokenizer.files = {"hf/tokenizer.json", "hf/tokenizer_config.json"};
  auto back = Manifest::FromJson(m.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->native.family, "roberta");
  EXPECT_EQ(back->native.config_blob, "hf/config.json");
  EXPECT_EQ(back->tokenizer.files, m.tokenizer.files);
  EXPECT_EQ(back->ToJson(), m.ToJson());
  using Named = std::pair<std::string, std::string>;
  EXPECT_THAT(m.NamedBlobs(),
              ::testing::IsSupersetOf({Named{"native.config_blob", "hf/config.json"},
                                       Named{"tokenizer.files[0]", "hf/tokenizer.json"},
                                       Named{"tokenizer.files[1]", "hf/tokenizer_config.json"}}));

  json j = json::parse(m.ToJson());
  j["model"]["tokenizer"].erase("files");
  EXPECT_THAT(Manifest::FromJson(j.dump()).status().message(),
              HasSubstr("model.tokenizer.files: must name the tokenizer's blobs"));
  j = json::parse(m.ToJson());
  j["model"]["native"]["family"] = "";
  EXPECT_THAT(Manifest::FromJson(j.dump()).status().message(),
              HasSubstr("model.native: family and config must not be empty"));
  j = json::parse(m.ToJson());
  j["model"]["native"].erase("config");
  EXPECT_THAT(Manifest::FromJson(j.dump()).status().message(),
              HasSubstr("model.native.config: is missing"));
}

// A causal LM version: no TorchScript architecture (the native engine runs it), tasks without
// labels (they generate text), an n-gram router.
TEST(ManifestTest, CausalLmVersionHasNoArchitectureAndNoLabels) {
  Manifest m = FullManifest();
  m.architecture_blob.clear();
  m.native = NativeModelEntry{"qwen2", "hf/config.json"};
  m.head_pattern = "^lm_head\\.";
  for (TaskEntry& task : m.tasks) task.labels.clear();
  m.router.features = "ngram";
  m.router.ngram = NgramSpec{2, 48};
  auto back = Manifest::FromJson(m.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameManifest(m, *back);
  EXPECT_EQ(back->native.family, "qwen2");
  EXPECT_EQ(back->ToJson(), m.ToJson());
  using Named = std::pair<std::string, std::string>;
  const auto named = back->NamedBlobs();
  EXPECT_EQ(named.front(), (Named{"shared_blob", "theta_star.safetensors"}));
  for (const auto& [field, blob] : named) EXPECT_NE(field, "architecture_blob");

  // An absent architecture reads as none, for every decoder family.
  for (const char* family : {"llama", "qwen2", "mistral"}) {
    json j = json::parse(m.ToJson());
    j["model"].erase("architecture");
    j["model"]["native"]["family"] = family;
    auto absent = Manifest::FromJson(j.dump());
    ASSERT_TRUE(absent.ok()) << family << ": " << absent.status();
    EXPECT_EQ(absent->architecture_blob, "") << family;
  }

  // An encoder or a TorchScript-only version needs its architecture and its labels.
  for (const std::string& family : {std::string("roberta"), std::string()}) {
    Manifest encoder = m;
    encoder.native = family.empty() ? NativeModelEntry{} : NativeModelEntry{family, "hf/c.json"};
    for (const bool erase : {false, true}) {
      json j = json::parse(encoder.ToJson());
      if (erase) j["model"].erase("architecture");
      auto parsed = Manifest::FromJson(j.dump());
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << family;
      EXPECT_THAT(std::string(parsed.status().message()),
                  HasSubstr("manifest field model.architecture: must not be empty"))
          << family;
    }
    encoder.architecture_blob = "architecture.pt";
    auto parsed = Manifest::FromJson(encoder.ToJson());
    EXPECT_THAT(std::string(parsed.status().message()),
                HasSubstr("manifest field tasks[0].labels: must list at least one label"))
        << family;
  }
}

TEST(ManifestTest, TaskIndexTotalBytesAndNamedBlobs) {
  const Manifest m = FullManifest();
  EXPECT_EQ(m.TaskIndex("spam"), 0);
  EXPECT_EQ(m.TaskIndex("lang"), 1);
  EXPECT_EQ(m.TaskIndex("absent"), -1);
  EXPECT_EQ(m.TotalBlobBytes(), (1ull << 20) + 5000000000ull);
  using Named = std::pair<std::string, std::string>;
  EXPECT_THAT(m.NamedBlobs(),
              ::testing::ElementsAre(Named{"architecture_blob", "arch/model.pt"},
                                     Named{"shared_blob", "theta_star.safetensors"},
                                     Named{"tasks[0].twin_blob", "twin/spam.safetensors"},
                                     Named{"tasks[1].twin_blob", "twin/lang.safetensors"},
                                     Named{"router.blob", "router/r.safetensors"},
                                     Named{"report_blob", "docs/report.md"}));
  Manifest no_report = m;
  no_report.report_blob.clear();
  EXPECT_EQ(no_report.NamedBlobs().size(), 5u);
}

}  // namespace
}  // namespace twin
