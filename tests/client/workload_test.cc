// Benchmark workloads: safetensors and tsv loading, padding stripping, task mixes.
#include "client/workload.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "core/io/safetensors.h"
#include "tests/testing/temp_dir.h"

namespace twin::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using twin::testing::TempDir;
using twin::testing::WriteFileOrDie;

std::vector<int64_t> Ids(const WorkItem& item) {
  const auto& ids = item.request.tokens().input_ids();
  return {ids.begin(), ids.end()};
}

std::vector<int64_t> Mask(const WorkItem& item) {
  const auto& mask = item.request.tokens().attention_mask();
  return {mask.begin(), mask.end()};
}

void WriteTokens(const std::string& path,
                 const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok()) << path;
}

TEST(WorkloadTest, LoadsSafetensorsAndStripsTrailingPadding) {
  TempDir dir;
  WriteTokens(
      dir.Join("alpha.test.safetensors"),
      {{"input_ids", at::tensor({5, 6, 7, 0, 0, 1, 2, 3, 4, 9}, at::kLong).view({2, 5})},
       {"attention_mask", at::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, at::kLong).view({2, 5})},
       {"labels", at::tensor({1, 0}, at::kLong)}});
  // int32 ids, a zero inside the kept prefix, no labels.
  WriteTokens(dir.Join("beta.test.safetensors"),
              {{"input_ids", at::tensor({3, 0, 8, 0}, at::kInt).view({1, 4})},
               {"attention_mask", at::tensor({1, 0, 1, 0}, at::kLong).view({1, 4})}});
  WriteFileOrDie(dir.Join("README.txt"), "not a workload file");

  auto workload = LoadWorkload(dir.path());
  ASSERT_TRUE(workload.ok()) << workload.status();
  EXPECT_THAT(workload->tasks, ElementsAre("alpha", "beta"));
  ASSERT_EQ(workload->size(), 3u);
  const auto& alpha = workload->items[0];
  ASSERT_EQ(alpha.size(), 2u);
  EXPECT_THAT(Ids(alpha[0]), ElementsAre(5, 6, 7));
  EXPECT_TRUE(Mask(alpha[0]).empty());  // all ones after stripping: left to the server default
  EXPECT_EQ(alpha[0].label_index, 1);
  EXPECT_EQ(alpha[0].task, "alpha");
  EXPECT_TRUE(alpha[0].request.task().empty());
  EXPECT_THAT(Ids(alpha[1]), ElementsAre(1, 2, 3, 4, 9));
  EXPECT_EQ(alpha[1].label_index, 0);
  const WorkItem& beta = workload->items[1][0];
  EXPECT_THAT(Ids(beta), ElementsAre(3, 0, 8));
  EXPECT_THAT(Mask(beta), ElementsAre(1, 0, 1));
  EXPECT_EQ(beta.label_index, -1);
  EXPECT_FALSE(beta.has_label());
}

TEST(WorkloadTest, LoadsTsvWithIndexOrNameLabels) {
  TempDir dir;
  WriteFileOrDie(dir.Join("spam.test.tsv"),
                 "1\tfree money now\n0\thello\tfriend\r\n\nham\tsee you at noon\n");
  auto workload = LoadWorkload(dir.path());
  ASSERT_TRUE(workload.ok()) << workload.status();
  ASSERT_THAT(workload->tasks, ElementsAre("spam"));
  const auto& items = workload->items[0];
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].request.text(), "free money now");
  EXPECT_EQ(items[0].label_index, 1);
  EXPECT_EQ(items[1].request.text(), "hello\tfriend");  // only the first tab separates
  EXPECT_EQ(items[1].label_index, 0);
  EXPECT_EQ(items[2].label_index, -1);
  EXPECT_EQ(items[2].label, "ham");
  EXPECT_TRUE(items[2].has_label());
}

TEST(WorkloadTest, LoadsJsonlPromptsAsTextWithoutLabels) {
  TempDir dir;
  WriteFileOrDie(dir.Join("upper.test.jsonl"),
                 "{\"prompt\": \"abc | upper: \", \"target\": \"ABC\"}\n\n"
                 "{\"prompt\": \"gr\\u00fcn\"}\n");
  auto workload = LoadWorkload(dir.path());
  ASSERT_TRUE(workload.ok()) << workload.status();
  ASSERT_THAT(workload->tasks, ElementsAre("upper"));
  const auto& items = workload->items[0];
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].request.text(), "abc | upper: ");
  EXPECT_EQ(items[1].request.text(), "gr\xc3\xbcn");
  EXPECT_FALSE(items[0].has_label());
  EXPECT_EQ(items[0].task, "upper");
  for (const char* bad :
       {"{\"target\": \"x\"}\n", "{\"prompt\": 3}\n", "{\"prompt\": \"\"}\n", "not json\n"}) {
    TempDir bad_dir;
    WriteFileOrDie(bad_dir.Join("t.test.jsonl"), std::string("{\"prompt\": \"ok\"}\n") + bad);
    auto loaded = LoadWorkload(bad_dir.path());
    ASSERT_FALSE(loaded.ok()) << bad;
    EXPECT_THAT(loaded.status().message(), HasSubstr("t.test.jsonl:2")) << bad;
  }
}

TEST(WorkloadTest, MergesBothFormatsOfOneTask) {
  TempDir dir;
  WriteFileOrDie(dir.Join("lang.test.tsv"), "0\tbonjour\n");
  WriteTokens(dir.Join("lang.test.safetensors"),
              {{"input_ids", at::tensor({4, 5}, at::kLong).view({1, 2})}});
  auto workload = LoadWorkload(dir.path());
  ASSERT_TRUE(workload.ok()) << workload.status();
  ASSERT_THAT(workload->tasks, ElementsAre("lang"));
  EXPECT_EQ(workload->items[0].size(), 2u);
}

TEST(WorkloadTest, BadInputsNameTheProblem) {
  {
    TempDir dir;
    auto workload = LoadWorkload(dir.path());
    EXPECT_EQ(workload.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(workload.status().message(), HasSubstr(dir.path()));
  }
  EXPECT_EQ(LoadWorkload("/nonexistent/twin/bench").status().code(), absl::StatusCode::kNotFound);
  {
    TempDir dir;
    WriteTokens(dir.Join("a.test.safetensors"),
                {{"input_ids", at::tensor({1, 2}, at::kLong).view({1, 2})},
                 {"attention_mask", at::tensor({1, 1, 1}, at::kLong).view({1, 3})}});
    auto workload = LoadWorkload(dir.path());
    EXPECT_EQ(workload.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(workload.status().message(), HasSubstr("a.test.safetensors"));
    EXPECT_THAT(workload.status().message(), HasSubstr("attention_mask"));
  }
  {
    TempDir dir;
    WriteTokens(dir.Join("a.test.safetensors"),
                {{"input_ids", at::tensor({1, 2}, at::kLong).view({1, 2})},
                 {"attention_mask", at::tensor({0, 0}, at::kLong).view({1, 2})}});
    EXPECT_THAT(LoadWorkload(dir.path()).status().message(), HasSubstr("row 0 is all padding"));
  }
  {
    TempDir dir;
    WriteTokens(dir.Join("a.test.safetensors"), {{"input_ids", at::tensor({1, 2}, at::kLong)}});
    EXPECT_THAT(LoadWorkload(dir.path()).status().message(), HasSubstr("must be [N,L]"));
  }
  {
    TempDir dir;
    WriteTokens(dir.Join("a.test.safetensors"),
                {{"input_ids", at::tensor({1, 2}, at::kLong).view({1, 2})},
                 {"labels", at::tensor({1, 0}, at::kLong)}});
    EXPECT_THAT(LoadWorkload(dir.path()).status().message(), HasSubstr("'labels' must be [1]"));
  }
  {
    TempDir dir;
    WriteTokens(dir.Join("a.test.safetensors"), {{"tokens", at::tensor({1}, at::kLong)}});
    EXPECT_EQ(LoadWorkload(dir.path()).status().code(), absl::StatusCode::kNotFound);
  }
  {
    TempDir dir;
    WriteFileOrDie(dir.Join("t.test.tsv"), "1\tok\nno tab here\n");
    auto workload = LoadWorkload(dir.path());
    EXPECT_EQ(workload.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(workload.status().message(), HasSubstr("t.test.tsv:2"));
  }
  {
    TempDir dir;
    WriteFileOrDie(dir.Join("t.test.tsv"), "\n\n");
    EXPECT_THAT(LoadWorkload(dir.path()).status().message(), HasSubstr("has no examples"));
  }
}

TEST(TaskMixTest, ParsesUniformAndWeightedMixes) {
  const std::vector<std::string> tasks = {"a", "b", "c"};
  auto uniform = TaskMix::Parse("", tasks);
  ASSERT_TRUE(uniform.ok()) << uniform.status();
  EXPECT_THAT(uniform->weights(), ElementsAre(1, 1, 1));
  auto weighted = TaskMix::Parse("a=3, c=0.5", tasks);
  ASSERT_TRUE(weighted.ok()) << weighted.status();
  EXPECT_THAT(weighted->weights(), ElementsAre(3, 0, 0.5));

  std::mt19937_64 rng(7);
  std::map<size_t, int> counts;
  for (int i = 0; i < 1000; ++i) ++counts[weighted->Pick(rng)];
  EXPECT_EQ(counts.count(1), 0u);  // zero weight: never drawn
  EXPECT_GT(counts[0], counts[2]);
}

TEST(TaskMixTest, RejectsBadSpecs) {
  const std::vector<std::string> tasks = {"a", "b"};
  EXPECT_THAT(TaskMix::Parse("z=1", tasks).status().message(), HasSubstr("unknown task 'z'"));
  EXPECT_THAT(TaskMix::Parse("a=-1", tasks).status().message(), HasSubstr("a=-1"));
  EXPECT_THAT(TaskMix::Parse("a", tasks).status().message(), HasSubstr("task=weight"));
  EXPECT_THAT(TaskMix::Parse("a=x", tasks).status().message(), HasSubstr("task=weight"));
  EXPECT_THAT(TaskMix::Parse("a=0,b=0", tasks).status().message(), HasSubstr("sum to 0"));
  EXPECT_EQ(TaskMix::Parse("", {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WorkloadSamplerTest, SameSeedSameSequence) {
  Workload workload;
  workload.tasks = {"a", "b"};
  workload.items.resize(2);
  for (int t = 0; t < 2; ++t) {
    for (int i = 0; i < 5; ++i) {
      WorkItem item;
      item.task = workload.tasks[t];
      item.request.set_text(std::to_string(i));
      workload.items[t].push_back(item);
    }
  }
  auto mix = TaskMix::Parse("b=1", workload.tasks);
  ASSERT_TRUE(mix.ok());
  WorkloadSampler first(&workload, &*mix, 11);
  WorkloadSampler second(&workload, &*mix, 11);
  for (int i = 0; i < 50; ++i) {
    const WorkItem& a = first.Next();
    const WorkItem& b = second.Next();
    EXPECT_EQ(&a, &b);
    EXPECT_EQ(a.task, "b");
  }
}

}  // namespace
}  // namespace twin::client
