// Multi-stage merging end to end: the tiny Hugging Face zoo merged with twin.from_layer 1 and
// router.features prefix keeps no twins in the embeddings and layer 0, and its router reads the
// mean hidden state after layer 0 under theta*. The engine routes on that prefix and continues
// every forward (fused and unfused) from it: the answers equal the whole forward's; the server
// answers alike fused, unfused, in mixed batches and one by one. Bad configurations and
// versions whose twins reach into the prefix are refused with errors that name the problem.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/io/safetensors.h"
#include "core/merge/twin_weights.h"
#include "core/model/hf_encoder.h"
#include "core/model/layer_params.h"
#include "core/router/router.h"
#include "core/store/artifact_set.h"
#include "core/store/file_store.h"
#include "merge_offline/merge_config.h"
#include "merge_offline/merge_job.h"
#include "server/engine.h"
#include "server/server_config.h"
#include "server/twin_server.h"
#include "tests/core/model/hf_test_models.h"
#include "tests/core/model/hf_test_zoo.h"
#include "tests/testing/rounding.h"
#include "tests/testing/served_artifacts.h"
#include "tests/testing/temp_dir.h"
#include "twinmerge/v1/twinmerge.pb.h"

namespace twin {
namespace {

using ::testing::HasSubstr;
using twin::testing::TempDir;
using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

constexpr int kNumTasks = 3;

class MultiStageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    twin::testing::HfTestZooOptions options;
    options.from_layer = 1;
    options.router_features = "prefix";
    zoo_ = new twin::testing::HfTestZoo(twin::testing::WriteHfTestZoo(dir_->path(), options));
    auto config = ParseMergeConfig(zoo_->merge_yaml, dir_->path());
    ASSERT_TRUE(config.ok()) << config.status();
    MergeJobOptions job;
    job.quiet = true;
    auto result = RunMergeJob(*config, job);
    ASSERT_TRUE(result.ok()) << result.status();
    auto store = FileObjectStore::Create(zoo_->store);
    ASSERT_TRUE(store.ok()) << store.status();
    auto set = FetchArtifactSet(store->get(), result->version, dir_->Join("fetched"));
    ASSERT_TRUE(set.ok()) << set.status();
    set_ = new LocalArtifactSet(*set);
  }
  static void TearDownTestSuite() {
    delete set_;
    delete zoo_;
    delete dir_;
  }

  static absl::StatusOr<MergeJobResult> Merge(const std::string& yaml) {
    auto config = ParseMergeConfig(yaml, dir_->path());
    if (!config.ok()) return config.status();
    MergeJobOptions job;
    job.quiet = true;
    return RunMergeJob(*config, job);
  }

  // A padded batch of the zoo's texts through the published tokenizer's ids: word ids of each
  // task's vocabulary, rows of different lengths.
  static void Batch(at::Tensor* ids, at::Tensor* mask) {
    at::manual_seed(11);
    const std::vector<int64_t> lengths = {9, 4, 12, 1, 7, 12};
    const int64_t len = 12;
    *ids = at::zeros({static_cast<int64_t>(lengths.size()), len}, at::kLong);
    *mask = at::zeros_like(*ids);
    const at::Tensor random = at::randint(5, zoo_->base.vocab, ids->sizes(), at::kLong);
    for (size_t r = 0; r < lengths.size(); ++r) {
      (*ids)[r].narrow(0, 0, lengths[r]).copy_(random[r].narrow(0, 0, lengths[r]));
      (*mask)[r].narrow(0, 0, lengths[r]).fill_(1);
    }
  }

  // The bound on two float32 forwards of the zoo's model that differ only in rounding.
  static double LogitBound(int64_t len, double scale) {
    return twin::testing::ForwardError(twin::testing::HfForwardDepth(zoo_->base) + 4,
                                       twin::testing::HfForwardWidth(zoo_->base, len), scale);
  }

  ServerConfig Config(const std::string& name) {
    return twin::testing::LoopbackServerConfigFor(
        zoo_->store, dir_->Join(absl::StrCat("cache-", name, "-", counter_++)));
  }

  std::vector<InferResponse> Serve(ServerConfig config, const std::vector<std::string>& texts,
                                   bool concurrent) {
    return twin::testing::InferTexts(config, texts, concurrent);
  }

  void ExpectSame(const std::vector<InferResponse>& a, const std::vector<InferResponse>& b,
                  const std::vector<std::string>& texts, const std::string& what) {
    twin::testing::ExpectSameReplies(
        a, b, texts, what,
        twin::testing::ProbabilityError(twin::testing::HfForwardDepth(zoo_->base) + 4,
                                        twin::testing::HfForwardWidth(zoo_->base, 16), 10.0));
  }


  static TempDir* dir_;
  static twin::testing::HfTestZoo* zoo_;
  static LocalArtifactSet* set_;
  int counter_ = 0;
};

TempDir* MultiStageTest::dir_ = nullptr;
twin::testing::HfTestZoo* MultiStageTest::zoo_ = nullptr;
LocalArtifactSet* MultiStageTest::set_ = nullptr;

TEST_F(MultiStageTest, TheVersionKeepsNoTwinsInTheRoutingPrefix) {
  ASSERT_NE(set_, nullptr);
  const Manifest& m = set_->manifest;
  EXPECT_EQ(m.router.features, "prefix");
  EXPECT_EQ(m.router.prefix_layers, 1);
  EXPECT_EQ(m.router.spec.input_dim, zoo_->base.hidden);
  EXPECT_EQ(m.rank_policy.value("from_layer", 0), 1);
  const std::string layer0 = "bert.encoder.layer.0.";
  const std::string layer1 = "bert.encoder.layer.1.";
  int prefix_entries = 0, twinned = 0;
  for (const TwinTensorEntry& e : m.twin_tensors) {
    const bool in_prefix = e.name.rfind("bert.embeddings.", 0) == 0 || e.name.rfind(layer0, 0) == 0;
    if (in_prefix) {
      ++prefix_entries;
      EXPECT_EQ(e.rank, 0) << e.name;
      EXPECT_GT(e.delta_norm, 0) << e.name;  // the experts did change it: theta* holds it
      EXPECT_EQ(e.rel_error, 1.0) << e.name;
    } else if (e.name.rfind(layer1, 0) == 0) {
      EXPECT_GT(e.rank, 0) << e.name;
      ++twinned;
    }
  }
  EXPECT_GT(prefix_entries, 0);
  EXPECT_GT(twinned, 0);
  // No factor or dense delta of a prefix tensor in any task's blob.
  for (const TaskEntry& task : m.tasks) {
    auto blob = SafetensorsReader::Open(set_->PathOf(task.twin_blob));
    ASSERT_TRUE(blob.ok()) << blob.status();
    int layer1_tensors = 0;
    for (const std::string& name : (*blob)->names()) {
      EXPECT_NE(name.rfind("bert.embeddings.", 0), 0u) << task.name << " " << name;
      EXPECT_NE(name.rfind(layer0, 0), 0u) << task.name << " " << name;
      layer1_tensors += name.rfind(layer1, 0) == 0;
    }
    EXPECT_GT(layer1_tensors, 0) << task.name;
  }
}

TEST_F(MultiStageTest, TheEngineRoutesOnThePrefixAndContinuesFromIt) {
  ASSERT_NE(set_, nullptr);
  auto engine = Engine::Load(*set_, EngineOptions{"cpu"});
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_TRUE((*engine)->routes_on_prefix());
  EXPECT_EQ((*engine)->prefix_layers(), 1);
  at::Tensor ids, mask;
  Batch(&ids, &mask);
  const int64_t rows = ids.size(0);
  at::Tensor hidden;
  auto weights = (*engine)->RouterWeights(ids, mask, std::vector<double>(rows, 1.0), &hidden);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_TRUE(hidden.defined());
  EXPECT_EQ(hidden.sizes(), (std::vector<int64_t>{rows, ids.size(1), zoo_->base.hidden}));

  // The router's weights are the published router on the prefix's pooled hidden state.
  auto tw = TwinWeights::Load(*set_, c10::kCPU);
  ASSERT_TRUE(tw.ok()) << tw.status();
  auto config = LoadHfEncoderConfigFile(set_->PathOf(set_->manifest.native.config_blob));
  ASSERT_TRUE(config.ok()) << config.status();
  auto encoder = HfEncoder::Create(*config);
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  DenseParams shared(std::map<std::string, at::Tensor>((*tw)->shared().begin(),
                                                       (*tw)->shared().end()));
  auto prefix = (*encoder)->Prefix(ids, mask, shared, 1);
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  EXPECT_LE((hidden - *prefix).abs().max().item<double>(),
            LogitBound(ids.size(1), 1.0 + prefix->abs().max().item<double>()));
  auto pooled = MeanPool(*prefix, mask);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  auto router = Router::Load(*set_);
  ASSERT_TRUE(router.ok()) << router.status();
  auto expected = (*router)->Weights(*pooled, 1.0);
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_LE((*weights - *expected).abs().max().item<double>(),
            twin::testing::ProbabilityError(twin::testing::HfForwardDepth(zoo_->base) + 6,
                                            twin::testing::HfForwardWidth(zoo_->base, 12), 10.0));

  // Unfused rows, each with its own mixture, and a fused weight set: continuing from the
  // routing prefix answers what the whole forward answers.
  std::vector<Engine::TaskRun> runs = {{0, 2}, {1, 2}, {2, 2}};
  auto whole = (*engine)->ForwardMixed(ids, mask, *weights, runs);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto continued = (*engine)->ForwardMixed(ids, mask, *weights, runs, hidden);
  ASSERT_TRUE(continued.ok()) << continued.status();
  ASSERT_EQ(whole->size(), continued->size());
  for (size_t r = 0; r < whole->size(); ++r) {
    const double scale = 1.0 + (*whole)[r].abs().max().item<double>();
    EXPECT_LE(((*whole)[r] - (*continued)[r]).abs().max().item<double>(),
              LogitBound(ids.size(1), scale))
        << "run " << r;
  }
  std::vector<double> w0((*weights)[0].data_ptr<float>(),
                         (*weights)[0].data_ptr<float>() + kNumTasks);
  auto fused = (*engine)->Fuse(w0);
  ASSERT_TRUE(fused.ok()) << fused.status();
  auto fused_whole = (*engine)->Forward(**fused, ids, mask, 1);
  auto fused_continued = (*engine)->Forward(**fused, ids, mask, 1, hidden);
  ASSERT_TRUE(fused_whole.ok()) << fused_whole.status();
  ASSERT_TRUE(fused_continued.ok()) << fused_continued.status();
  EXPECT_LE((*fused_whole - *fused_continued).abs().max().item<double>(),
            LogitBound(ids.size(1), 1.0 + fused_whole->abs().max().item<double>()));
  // A prefix of the wrong shape is an error, not a wrong answer.
  auto wrong = (*engine)->ForwardMixed(ids, mask, *weights, runs, hidden.narrow(1, 0, 3));
  EXPECT_FALSE(wrong.ok());
}

TEST_F(MultiStageTest, ServedAnswersAgreeFusedUnfusedAndInMixedBatches) {
  ASSERT_NE(set_, nullptr);
  const std::vector<std::string> texts = twin::testing::HfTestZooServingTexts(5);
  ServerConfig fused = Config("fused");
  fused.batches = "fused";
  ServerConfig unfused = Config("unfused");
  unfused.batches = "unfused";
  ServerConfig mixed = Config("mixed");
  mixed.batches = "unfused";
  mixed.queue.max_batch_size = static_cast<int>(texts.size());
  mixed.queue.max_queue_delay_us = 200000;  // the burst gathers into few batches
  const std::vector<InferResponse> by_fused = Serve(fused, texts, false);
  const std::vector<InferResponse> by_unfused = Serve(unfused, texts, false);
  const std::vector<InferResponse> together = Serve(mixed, texts, true);
  ASSERT_EQ(by_unfused.size(), texts.size());
  for (size_t k = 0; k < texts.size(); ++k) {
    EXPECT_EQ(by_fused[k].batch_mode(), "fused");
    EXPECT_EQ(by_unfused[k].batch_mode(), "unfused");
    EXPECT_GT(by_unfused[k].router_weights_size(), 0) << texts[k];
  }
  ExpectSame(by_unfused, by_fused, texts, "unfused vs fused");
  ExpectSame(together, by_unfused, texts, "mixed batches vs one by one");
  std::set<std::string> keys;
  for (const InferResponse& r : together) keys.insert(r.cluster_key());
  EXPECT_GT(keys.size(), 3u);  // the batches really mixed keys
}

TEST_F(MultiStageTest, VersionsTheEngineCannotServeExactlyAreRefused) {
  ASSERT_NE(set_, nullptr);
  EngineOptions torchscript{"cpu"};
  torchscript.model = "torchscript";
  auto no_native = Engine::Load(*set_, torchscript);
  EXPECT_EQ(no_native.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(no_native.status().message(), HasSubstr("native engine"));

  // A router claiming a deeper prefix than the twins leave alone: layer 1 has twins.
  LocalArtifactSet deeper = *set_;
  deeper.manifest.router.prefix_layers = 2;
  auto refused = Engine::Load(deeper, EngineOptions{"cpu"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("bert.encoder.layer.1."));
  EXPECT_THAT(refused.status().message(), HasSubstr("twin.from_layer"));

  LocalArtifactSet past_the_end = *set_;
  past_the_end.manifest.router.prefix_layers = 3;
  auto too_deep = Engine::Load(past_the_end, EngineOptions{"cpu"});
  EXPECT_EQ(too_deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_deep.status().message(), HasSubstr("has 2"));
}

TEST_F(MultiStageTest, BadMultiStageConfigsPublishNothing) {
  ASSERT_NE(zoo_, nullptr);
  auto with = [&](const std::string& from, const std::string& to, const std::string& version) {
    return absl::StrReplaceAll(zoo_->merge_yaml, {{from, to}, {"version: v1", version}});
  };
  auto no_prefix = Merge(with("from_layer: 1", "from_layer: 0", "version: bad1"));
  EXPECT_EQ(no_prefix.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_prefix.status().message(), HasSubstr("twin.from_layer >= 1"));
  auto too_deep = Merge(with("from_layer: 1", "from_layer: 3", "version: bad2"));
  EXPECT_EQ(too_deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_deep.status().message(), HasSubstr("has 2 layers"));
  auto negative = ParseMergeConfig(with("from_layer: 1", "from_layer: -1", "version: bad3"),
                                   dir_->path());
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.status().message(), HasSubstr("twin.from_layer"));
  auto unknown = ParseMergeConfig(with("features: prefix", "features: prefixes", "version: bad4"),
                                  dir_->path());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("prefix"));
  auto store = FileObjectStore::Create(zoo_->store);
  ASSERT_TRUE(store.ok());
  for (const char* version : {"bad1", "bad2"}) {
    EXPECT_FALSE((*store)->Head(absl::StrCat(version, "/", kManifestName)).ok()) << version;
  }
}

// twin.from_layer alone (with the n-gram router): the prefix keeps no twins and the version is
// served like any other (its forward runs from the embeddings).
TEST_F(MultiStageTest, FromLayerAloneDropsThePrefixTwins) {
  ASSERT_NE(zoo_, nullptr);
  const std::string yaml = absl::StrReplaceAll(
      zoo_->merge_yaml, {{"features: prefix", "features: ngram"}, {"version: v1", "version: ng1"}});
  auto result = Merge(yaml);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->manifest.router.features, "ngram");
  for (const TwinTensorEntry& e : result->manifest.twin_tensors) {
    if (e.name.rfind("bert.encoder.layer.0.", 0) == 0) {
      EXPECT_EQ(e.rank, 0) << e.name;
    }
  }
  auto store = FileObjectStore::Create(zoo_->store);
  ASSERT_TRUE(store.ok());
  auto set = FetchArtifactSet(store->get(), "ng1", dir_->Join("fetched-ng1"));
  ASSERT_TRUE(set.ok()) << set.status();
  auto engine = Engine::Load(*set, EngineOptions{"cpu"});
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_FALSE((*engine)->routes_on_prefix());
}

}  // namespace
}  // namespace twin
