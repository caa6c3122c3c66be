#include "merge_offline/merge_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace twin {
namespace {

using ::testing::HasSubstr;

constexpr char kValid[] = R"YAML(
merge_method: ties
base_model: base.pt
models:
  - model: experts/a.pt
    router_data: data/a.txt
    labels: [x, y]
    parameters: {weight: 2.0, density: 0.5}
  - model: /abs/b.safetensors
    name: bee
    router_data: data/b.safetensors
parameters: {lambda: 0.7, density: 0.3}
twin: {rank_policy: energy, energy: 0.95, dtype: f16}
router: {layers: 3, max_epochs: 7, patience: 2, balance_tasks: true, features: ngram,
         ngram: {max_order: 2, buckets: 1024}}
tokenizer: {max_length: 64}
output: store
version: v1
seed: 9
)YAML";

TEST(MergeConfigTest, ParsesEveryField) {
  auto c = ParseMergeConfig(kValid, "/cfg");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->method, MergeMethod::kTies);
  EXPECT_DOUBLE_EQ(c->lambda, 0.7);
  EXPECT_EQ(c->base_model, "/cfg/base.pt");
  ASSERT_EQ(c->experts.size(), 2u);
  EXPECT_EQ(c->experts[0].name, "a");
  EXPECT_EQ(c->experts[0].path, "/cfg/experts/a.pt");
  EXPECT_EQ(c->experts[0].router_data, "/cfg/data/a.txt");
  EXPECT_EQ(c->experts[0].labels, (std::vector<std::string>{"x", "y"}));
  EXPECT_DOUBLE_EQ(c->experts[0].weight, 2.0);
  EXPECT_DOUBLE_EQ(c->experts[0].density, 0.5);
  EXPECT_EQ(c->experts[1].name, "bee");
  EXPECT_EQ(c->experts[1].path, "/abs/b.safetensors");
  EXPECT_DOUBLE_EQ(c->experts[1].density, 0.3);  // global default applies
  EXPECT_EQ(c->rank_policy.kind, RankPolicy::kEnergy);
  EXPECT_DOUBLE_EQ(c->rank_policy.energy, 0.95);
  EXPECT_EQ(c->twin_dtype, "F16");
  EXPECT_EQ(c->router.num_hidden_layers, 3);
  EXPECT_EQ(c->router.max_epochs, 7);
  EXPECT_TRUE(c->router.balance_tasks);
  EXPECT_EQ(c->router_features, "ngram");
  EXPECT_EQ(c->router_ngram.max_order, 2);
  EXPECT_EQ(c->router_ngram.buckets, 1024);
  EXPECT_EQ(c->tokenizer.max_length, 64);
  EXPECT_EQ(c->output, "/cfg/store");
  EXPECT_EQ(c->version, "v1");
  EXPECT_EQ(c->seed, 9u);
  MergeOptions o = c->ToMergeOptions();
  EXPECT_EQ(o.weights, (std::vector<double>{2.0, 1.0}));
}

TEST(MergeConfigTest, DefaultLambdaFollowsTheMethod) {
  auto c = ParseMergeConfig(R"YAML(
base_model: b.pt
models:
  - {model: a.pt, router_data: a.txt}
  - {model: c.pt, router_data: c.txt}
output: file:///tmp/x
)YAML",
                            "/d");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->method, MergeMethod::kTaskArithmetic);
  EXPECT_DOUBLE_EQ(c->lambda, 0.3);
  EXPECT_EQ(c->output, "file:///tmp/x");
  EXPECT_EQ(c->rank_policy.kind, RankPolicy::kRatio);
  EXPECT_DOUBLE_EQ(c->rank_policy.ratio, 0.1);
  // No head_pattern: the classifier default, which a causal LM's job replaces by none.
  EXPECT_EQ(c->head_pattern, kDefaultHeadPattern);
  EXPECT_FALSE(c->head_pattern_given);
}

TEST(MergeConfigTest, HeadPatternGivenIsRecorded) {
  auto c = ParseMergeConfig(R"YAML(
base_model: base
models:
  - {model: a, router_data: a.txt}
  - {model: c, router_data: c.txt}
head_pattern: '^lm_head\.'
)YAML",
                            "/d");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_pattern, "^lm_head\\.");
  EXPECT_TRUE(c->head_pattern_given);
}

struct BadCase {
  const char* name;
  const char* yaml;
  const char* expected;  // substring of the error
};

class MergeConfigBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(MergeConfigBadTest, RejectsWithANamedError) {
  auto c = ParseMergeConfig(GetParam().yaml, "/d");
  ASSERT_FALSE(c.ok()) << GetParam().yaml;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(GetParam().expected));
}

#define TWO_MODELS \
  "models:\n  - {model: a.pt, router_data: a.txt}\n  - {model: c.pt, router_data: c.txt}\n"

INSTANTIATE_TEST_SUITE_P(
    Cases, MergeConfigBadTest,
    ::testing::Values(
        BadCase{"BadYaml", "base_model: [unclosed", "bad YAML"},
        BadCase{"Empty", "", "empty"},
        BadCase{"OneExpert", "base_model: b.pt\nmodels:\n  - {model: a.pt, router_data: a.txt}\n",
                "at least 2 experts"},
        BadCase{"UnknownTopKey", TWO_MODELS "base_model: b.pt\nbogus: 1\n", "bogus"},
        BadCase{"UnknownMethod", TWO_MODELS "base_model: b.pt\nmerge_method: soup\n", "merge_method"},
        BadCase{"MissingBase", TWO_MODELS, "base_model"},
        BadCase{"MissingRouterData", "base_model: b.pt\nmodels:\n  - {model: a.pt}\n  - {model: c.pt, "
                "router_data: c.txt}\n",
                "models[0].router_data"},
        BadCase{"UnknownModelKey", "base_model: b.pt\nmodels:\n  - {model: a.pt, router_data: a.txt, colour: "
                "red}\n  - {model: c.pt, router_data: c.txt}\n",
                "models[0].colour"},
        BadCase{"DuplicateName", "base_model: b.pt\nmodels:\n  - {model: a.pt, name: x, router_data: a.txt}\n"
                "  - {model: c.pt, name: x, router_data: c.txt}\n",
                "duplicate task name"},
        BadCase{"BadName", "base_model: b.pt\nmodels:\n  - {model: a.pt, name: 'a b', router_data: a}\n"
                "  - {model: c.pt, router_data: c.txt}\n",
                "models[0].name"},
        BadCase{"ZeroRatio", TWO_MODELS "base_model: b.pt\ntwin: {rank_policy: ratio, ratio: 0}\n", "twin"},
        BadCase{"NegativeRank", TWO_MODELS "base_model: b.pt\ntwin: {rank_policy: rank, rank: -3}\n", "twin"},
        BadCase{"EnergyAboveOne", TWO_MODELS "base_model: b.pt\ntwin: {rank_policy: energy, energy: 1.5}\n",
                "twin"},
        BadCase{"UnknownPolicy", TWO_MODELS "base_model: b.pt\ntwin: {rank_policy: magic}\n", "rank_policy"},
        BadCase{"BadDtype", TWO_MODELS "base_model: b.pt\ntwin: {dtype: int8}\n", "twin.dtype"},
        BadCase{"BadRouterFeatures", TWO_MODELS "base_model: b.pt\nrouter: {features: pooled}\n",
                "router.features: 'pooled' is not auto, model, ngram or prefix"},
        BadCase{"BadNgramOrder", TWO_MODELS "base_model: b.pt\nrouter: {ngram: {max_order: 9}}\n",
                "router.ngram.max_order"},
        BadCase{"BadNgramBuckets", TWO_MODELS "base_model: b.pt\nrouter: {ngram: {buckets: 0}}\n",
                "router.ngram.buckets"},
        BadCase{"UnknownNgramKey", TWO_MODELS "base_model: b.pt\nrouter: {ngram: {size: 3}}\n",
                "router.ngram.size"},
        BadCase{"BadDropout", TWO_MODELS "base_model: b.pt\nrouter: {dropout: 1.5}\n", "router.dropout"},
        BadCase{"ZeroDensity", TWO_MODELS "base_model: b.pt\nparameters: {density: 0}\n", "parameters"},
        BadCase{"BadHeadPattern", TWO_MODELS "base_model: b.pt\nhead_pattern: '(['\n", "head_pattern"},
        BadCase{"BadVersion", TWO_MODELS "base_model: b.pt\nversion: '../x'\n", "version"},
        BadCase{"BadSeed", TWO_MODELS "base_model: b.pt\nseed: lots\n", "seed"},
        // Keys that are sequences or mappings once aborted the process (TypedBadConversion).
        BadCase{"SequenceKey", "{[a]: 1}", "key that is not a plain name"},
        BadCase{"MappingKeyInModel", "base_model: b.pt\nmodels:\n  - {model: a.pt, router_data: a.txt, "
                "{x: 1}: 2}\n  - {model: c.pt, router_data: c.txt}\n",
                "models[0]: has a key that is not a plain name"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

// 100,000 nested flow sequences: refused by yaml-cpp's depth guard, not a stack overflow.
TEST(MergeConfigTest, DeeplyNestedYamlIsAConfigError) {
  const std::string yaml = "base_model: " + std::string(100000, '[') + std::string(100000, ']');
  auto c = ParseMergeConfig(yaml, "/d");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("merge config: bad YAML"));
}

TEST(MergeConfigTest, MissingFileIsNotFound) {
  auto c = LoadMergeConfig("/nonexistent/merge.yaml");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/merge.yaml"));
}

}  // namespace
}  // namespace twin
