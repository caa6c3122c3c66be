// The Open Inference Protocol codec on its own: request validation and row splitting, and the
// response in typed and raw form.
#include "server/kserve_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "tests/testing/kserve_requests.h"

namespace twin {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using twinmerge::v1::InferResponse;
using twin::testing::AddInput;
using twin::testing::LittleEndian;

constexpr int kMaxRows = 8;


TEST(KServeCodecTest, SplitsTypedTokenRowsAndAppliesParameters) {
  ModelInferRequest r;
  auto* ids = AddInput(&r, "input_ids", "INT64", {2, 3});
  for (int64_t v : {5, 6, 7, 8, 9, 10}) ids->mutable_contents()->add_int64_contents(v);
  auto* mask = AddInput(&r, "attention_mask", "INT64", {2, 3});
  for (int64_t v : {1, 1, 1, 1, 1, 0}) mask->mutable_contents()->add_int64_contents(v);
  (*r.mutable_parameters())["task"].set_string_param("task1");
  (*r.mutable_parameters())["top_k"].set_int64_param(2);
  (*r.mutable_parameters())["temperature"].set_double_param(0.5);
  auto decoded = DecodeModelInfer(r, kMaxRows);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(decoded->raw);
  ASSERT_EQ(decoded->rows.size(), 2u);
  EXPECT_THAT(decoded->rows[1].tokens().input_ids(), ElementsAre(8, 9, 10));
  EXPECT_THAT(decoded->rows[1].tokens().attention_mask(), ElementsAre(1, 1, 0));
  for (const auto& row : decoded->rows) {
    EXPECT_EQ(row.task(), "task1");
    EXPECT_EQ(row.routing().top_k(), 2);
    EXPECT_FLOAT_EQ(row.routing().temperature(), 0.5f);
  }
}

TEST(KServeCodecTest, ReadsRawLittleEndianTokensAndLengthPrefixedText) {
  ModelInferRequest tokens;
  AddInput(&tokens, "input_ids", "INT64", {1, 2});
  tokens.add_raw_input_contents(LittleEndian(258, 8) + LittleEndian(3, 8));
  auto decoded = DecodeModelInfer(tokens, kMaxRows);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(decoded->raw);
  EXPECT_THAT(decoded->rows[0].tokens().input_ids(), ElementsAre(258, 3));

  ModelInferRequest text;
  AddInput(&text, "text", "BYTES", {2, 1});
  text.add_raw_input_contents(LittleEndian(2, 4) + "hi" + LittleEndian(5, 4) + "there");
  decoded = DecodeModelInfer(text, kMaxRows);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->rows.size(), 2u);
  EXPECT_EQ(decoded->rows[0].text(), "hi");
  EXPECT_EQ(decoded->rows[1].text(), "there");
}

TEST(KServeCodecTest, RejectsBadRequestsWithMessagesNamingTheProblem) {
  struct Case {
    std::string name;
    ModelInferRequest request;
    std::string needle;
  };
  std::vector<Case> cases;
  ModelInferRequest r;
  cases.push_back({"no inputs", r, "missing input"});
  r = {};
  AddInput(&r, "input_ids", "INT32", {1, 1})->mutable_contents()->add_int_contents(3);
  cases.push_back({"datatype", r, "datatype 'INT32'; expected INT64"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {1, 1})->mutable_contents()->add_int_contents(3);
  cases.push_back({"wrong contents field", r, "carries data in int_contents"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {3})->mutable_contents()->add_int64_contents(3);
  cases.push_back({"1-d ids", r, "expected [B, L]"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {1, 2})->mutable_contents()->add_int64_contents(3);
  cases.push_back({"count", r, "shape [1, 2] needs 2"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {1, 1});
  cases.push_back({"no data", r, "has no data"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {1, 1})->mutable_contents()->add_int64_contents(3);
  r.add_raw_input_contents(LittleEndian(3, 8));
  cases.push_back({"mixed", r, "typed contents but the request also has raw_input_contents"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {1, 2});
  r.add_raw_input_contents(LittleEndian(3, 8));
  cases.push_back({"raw size", r, "has 8 bytes; INT64 shape [1, 2] needs 16"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {1, 1});
  AddInput(&r, "attention_mask", "INT64", {1, 1});
  r.add_raw_input_contents(LittleEndian(3, 8));
  cases.push_back({"raw count", r, "raw_input_contents has 1 entries but the request has 2"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {1, 1})->mutable_contents()->add_int64_contents(3);
  AddInput(&r, "attention_mask", "INT64", {1, 2});
  cases.push_back({"mask shape", r, "'attention_mask' has shape [1, 2]"});
  r = {};
  AddInput(&r, "attention_mask", "INT64", {1, 1})->mutable_contents()->add_int64_contents(1);
  cases.push_back({"mask alone", r, "needs input 'input_ids'"});
  r = {};
  AddInput(&r, "text", "BYTES", {1})->mutable_contents()->add_bytes_contents("a");
  AddInput(&r, "input_ids", "INT64", {1, 1})->mutable_contents()->add_int64_contents(3);
  cases.push_back({"both", r, "alternatives"});
  r = {};
  AddInput(&r, "pixels", "FP32", {1});
  cases.push_back({"unknown input", r, "unknown input 'pixels'"});
  r = {};
  AddInput(&r, "text", "BYTES", {1})->mutable_contents()->add_bytes_contents("a");
  AddInput(&r, "text", "BYTES", {1})->mutable_contents()->add_bytes_contents("b");
  cases.push_back({"twice", r, "appears twice"});
  r = {};
  AddInput(&r, "text", "BYTES", {1, 2});
  cases.push_back({"text shape", r, "expected [B] or [B, 1]"});
  r = {};
  AddInput(&r, "text", "BYTES", {2});
  r.add_raw_input_contents(LittleEndian(1, 4) + "a" + LittleEndian(9, 4) + "b");
  cases.push_back({"truncated bytes", r, "element 1 claims 9 bytes"});
  r = {};
  AddInput(&r, "text", "BYTES", {kMaxRows + 1});
  cases.push_back({"too many rows", r, "at most 8 per request"});
  r = {};
  AddInput(&r, "input_ids", "INT64", {0, 1});
  cases.push_back({"zero dim", r, "every dimension must be >= 1"});
  ModelInferRequest good;
  AddInput(&good, "text", "BYTES", {1})->mutable_contents()->add_bytes_contents("a");
  r = good;
  (*r.mutable_parameters())["topk"].set_int64_param(1);
  cases.push_back({"unknown parameter", r, "unknown parameter 'topk'"});
  r = good;
  (*r.mutable_parameters())["task"].set_int64_param(1);
  cases.push_back({"task type", r, "'task' must be a string_param"});
  r = good;
  (*r.mutable_parameters())["top_k"].set_int64_param(-2);
  cases.push_back({"top_k", r, "'top_k' is -2"});
  r = good;
  (*r.mutable_parameters())["temperature"].set_string_param("hot");
  cases.push_back({"temperature type", r, "'temperature' must be a double_param"});
  r = good;
  r.add_outputs()->set_name("logits");
  cases.push_back({"unknown output", r, "unknown output 'logits'"});
  for (const auto& c : cases) {
    auto decoded = DecodeModelInfer(c.request, kMaxRows);
    ASSERT_FALSE(decoded.ok()) << c.name;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(decoded.status().message()), HasSubstr(c.needle)) << c.name;
  }
}

InferResponse Reply(const std::string& task, std::vector<float> probabilities, int label,
                    const std::string& key, bool hit) {
  InferResponse r;
  r.set_task(task);
  for (float p : probabilities) r.add_probabilities(p);
  r.set_label_index(label);
  r.set_label(absl::StrCat("class", label));
  r.set_cluster_key(key);
  r.set_cache_hit(hit);
  auto* w = r.add_router_weights();
  w->set_task(task);
  w->set_weight(1.0f);
  return r;
}

float FloatAt(const std::string& raw, size_t i) {
  uint32_t bits = 0;
  for (int b = 0; b < 4; ++b)
    bits |= uint32_t{static_cast<unsigned char>(raw[4 * i + b])} << (8 * b);
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

TEST(KServeCodecTest, TypedResponsePadsProbabilitiesAndReportsSharedParameters) {
  DecodedInfer decoded;
  decoded.rows.resize(2);
  std::vector<InferResponse> replies = {Reply("task0", {0.25f, 0.75f}, 1, "k0", true),
                                        Reply("task1", {0.5f, 0.25f, 0.25f}, 0, "k1", false)};
  ModelInferResponse response;
  ASSERT_TRUE(EncodeModelInfer(decoded, replies, {"task0", "task1", "task2"}, &response).ok());
  ASSERT_EQ(response.outputs_size(), 5);
  EXPECT_EQ(response.raw_output_contents_size(), 0);
  const auto& probs = response.outputs(0);
  EXPECT_EQ(probs.name(), "probabilities");
  EXPECT_EQ(probs.datatype(), "FP32");
  EXPECT_THAT(probs.shape(), ElementsAre(2, 3));
  EXPECT_THAT(probs.contents().fp32_contents(),
              ElementsAre(0.25f, 0.75f, 0.0f, 0.5f, 0.25f, 0.25f));
  const auto& weights = response.outputs(1);
  EXPECT_THAT(weights.shape(), ElementsAre(2, 3));
  EXPECT_THAT(weights.contents().fp32_contents(), ElementsAre(1, 0, 0, 0, 1, 0));
  EXPECT_EQ(response.outputs(2).datatype(), "INT64");
  EXPECT_THAT(response.outputs(2).contents().int64_contents(), ElementsAre(1, 0));
  EXPECT_THAT(response.outputs(3).contents().bytes_contents(), ElementsAre("class1", "class0"));
  EXPECT_THAT(response.outputs(4).contents().bytes_contents(), ElementsAre("task0", "task1"));
  // Rows disagree on task, label and key: only cache_hit (false: not every row hit) is set.
  EXPECT_EQ(response.parameters().count("task"), 0u);
  EXPECT_EQ(response.parameters().count("cluster_key"), 0u);
  ASSERT_EQ(response.parameters().count("cache_hit"), 1u);
  EXPECT_FALSE(response.parameters().at("cache_hit").bool_param());
}

TEST(KServeCodecTest, RawResponseFollowsTheRequestedOutputs) {
  DecodedInfer decoded;
  decoded.rows.resize(1);
  decoded.raw = true;
  decoded.outputs = {"task", "probabilities", "label_index"};
  std::vector<InferResponse> replies = {Reply("task1", {0.125f, 0.875f}, 1, "k", true)};
  ModelInferResponse response;
  ASSERT_TRUE(EncodeModelInfer(decoded, replies, {"task0", "task1"}, &response).ok());
  ASSERT_EQ(response.outputs_size(), 3);
  ASSERT_EQ(response.raw_output_contents_size(), 3);
  EXPECT_EQ(response.outputs(0).name(), "task");
  EXPECT_FALSE(response.outputs(0).has_contents());
  EXPECT_EQ(response.raw_output_contents(0), LittleEndian(5, 4) + "task1");
  EXPECT_EQ(response.raw_output_contents(1).size(), 8u);
  EXPECT_FLOAT_EQ(FloatAt(response.raw_output_contents(1), 0), 0.125f);
  EXPECT_FLOAT_EQ(FloatAt(response.raw_output_contents(1), 1), 0.875f);
  EXPECT_EQ(response.raw_output_contents(2), LittleEndian(1, 8));
  EXPECT_EQ(response.parameters().at("task").string_param(), "task1");
  EXPECT_EQ(response.parameters().at("label").string_param(), "class1");
  EXPECT_EQ(response.parameters().at("cluster_key").string_param(), "k");
  EXPECT_TRUE(response.parameters().at("cache_hit").bool_param());
}

TEST(KServeCodecTest, SignatureListsEveryTensor) {
  inference::ModelMetadataResponse metadata;
  AddModelSignature(4, &metadata);
  ASSERT_EQ(metadata.inputs_size(), 3);
  EXPECT_EQ(metadata.inputs(0).name(), "input_ids");
  EXPECT_THAT(metadata.inputs(0).shape(), ElementsAre(-1, -1));
  EXPECT_EQ(metadata.inputs(2).datatype(), "BYTES");
  ASSERT_EQ(metadata.outputs_size(), 5);
  EXPECT_EQ(metadata.outputs(1).name(), "router_weights");
  EXPECT_THAT(metadata.outputs(1).shape(), ElementsAre(-1, 4));
}

}  // namespace
}  // namespace twin
