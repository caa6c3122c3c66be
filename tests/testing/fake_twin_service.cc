#include "tests/testing/fake_twin_service.h"

#include <algorithm>
#include <chrono>

#include <grpcpp/health_check_service_interface.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace twin::testing {
namespace {

using twinmerge::v1::InferRequest;
using twinmerge::v1::InferResponse;

constexpr int kNumLabels = 2;
constexpr float kChosenProbability = 0.75f;
// A delayed call re-checks for cancellation this often, so deadlines end it promptly.
constexpr absl::Duration kDelayPollInterval = absl::Milliseconds(5);
constexpr char kLoopbackAnyPort[] = "127.0.0.1:0";

twinmerge::v1::ModelInfo DefaultModelInfo() {
  twinmerge::v1::ModelInfo info;
  info.set_artifact_version(kFakeArtifactVersion);
  for (const char* name : {"task0", "task1"}) {
    twinmerge::v1::TaskInfo* task = info.add_tasks();
    task->set_name(name);
    task->add_labels("label0");
    task->add_labels("label1");
    info.add_mean_rank(4.0);
  }
  info.set_merge_method("task_arithmetic");
  info.set_rank_policy(R"({"fraction":0.1})");
  info.set_router_validation_accuracy(0.9);
  info.set_num_parameters(1234);
  info.set_tokenizer("bytes");
  info.set_device("cpu");
  info.mutable_limits()->set_max_batch_size(8);
  info.mutable_limits()->set_max_input_length(128);
  info.mutable_limits()->set_max_top_k(2);
  info.mutable_limits()->set_default_top_k(2);
  info.mutable_limits()->set_default_temperature(1.0f);
  info.mutable_limits()->set_max_queue_size(64);
  return info;
}

// Sleeps for `delay`, returning early once the call is cancelled or past its deadline.
void DelayUnlessCancelled(grpc::ServerContext* context, absl::Duration delay) {
  const absl::Time end = absl::Now() + delay;
  while (absl::Now() < end && !context->IsCancelled()) {
    absl::SleepFor(std::min(kDelayPollInterval, end - absl::Now()));
  }
}

}  // namespace

FakeTwinService::FakeTwinService() : model_info_(DefaultModelInfo()) {}

int FakeTwinService::ExpectedLabel(const InferRequest& request) {
  int64_t sum = 0;
  if (request.has_tokens()) {
    for (int64_t id : request.tokens().input_ids()) sum += id;
  } else {
    for (unsigned char c : request.text()) sum += c;
  }
  return static_cast<int>(((sum % kNumLabels) + kNumLabels) % kNumLabels);
}

void FakeTwinService::FailAll(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  fail_all_ = status;
}

void FakeTwinService::FailEveryNth(int n, const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  fail_every_n_ = n;
  fail_every_status_ = status;
}

void FakeTwinService::SetDelay(absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  delay_ = delay;
}

void FakeTwinService::SetModelInfo(const twinmerge::v1::ModelInfo& info) {
  absl::MutexLock lock(&mu_);
  model_info_ = info;
}

int64_t FakeTwinService::infer_calls() const {
  absl::MutexLock lock(&mu_);
  return infer_calls_;
}

int64_t FakeTwinService::stream_messages() const {
  absl::MutexLock lock(&mu_);
  return stream_messages_;
}

int64_t FakeTwinService::streams_opened() const {
  absl::MutexLock lock(&mu_);
  return streams_opened_;
}

int64_t FakeTwinService::model_info_calls() const {
  absl::MutexLock lock(&mu_);
  return model_info_calls_;
}

grpc::Status FakeTwinService::Admit(bool stream, absl::Duration* delay, bool* cache_hit) {
  absl::MutexLock lock(&mu_);
  const int64_t n = stream ? ++stream_messages_ : ++infer_calls_;
  *delay = delay_;
  *cache_hit = (infer_calls_ + stream_messages_) % 2 == 0;
  if (!fail_all_.ok()) return fail_all_;
  if (fail_every_n_ > 0 && n % fail_every_n_ == 0) return fail_every_status_;
  return grpc::Status::OK;
}

void FakeTwinService::Answer(const InferRequest& request, bool cache_hit, InferResponse* reply) {
  const int label = ExpectedLabel(request);
  const std::string task = request.task().empty() ? kFakeRoutedTask : request.task();
  reply->set_request_id(request.request_id());
  reply->set_task(task);
  reply->set_label(absl::StrCat("label", label));
  reply->set_label_index(label);
  for (int i = 0; i < kNumLabels; ++i) {
    reply->add_probabilities(i == label ? kChosenProbability : 1.0f - kChosenProbability);
  }
  twinmerge::v1::RouterWeight* weight = reply->add_router_weights();
  weight->set_task(task);
  weight->set_weight(1.0f);
  reply->set_cluster_key(absl::StrCat(task, ":1"));
  reply->set_cache_hit(cache_hit);
  reply->set_artifact_version(kFakeArtifactVersion);
  twinmerge::v1::TimeSplit* timing = reply->mutable_timing();
  timing->set_queue_us(1);
  timing->set_route_us(2);
  timing->set_fuse_us(3);
  timing->set_forward_us(4);
  timing->set_total_us(10);
}

std::vector<float> FakeTwinService::temperatures() const {
  absl::MutexLock lock(&mu_);
  return temperatures_;
}

grpc::Status FakeTwinService::Infer(grpc::ServerContext* context, const InferRequest* request,
                                    InferResponse* reply) {
  absl::Duration delay;
  bool cache_hit = false;
  {
    absl::MutexLock lock(&mu_);
    temperatures_.push_back(request->routing().temperature());
  }
  grpc::Status status = Admit(/*stream=*/false, &delay, &cache_hit);
  DelayUnlessCancelled(context, delay);
  if (!status.ok()) return status;
  Answer(*request, cache_hit, reply);
  return grpc::Status::OK;
}

grpc::Status FakeTwinService::InferStream(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<InferResponse, InferRequest>* stream) {
  {
    absl::MutexLock lock(&mu_);
    ++streams_opened_;
  }
  InferRequest request;
  while (stream->Read(&request)) {
    absl::Duration delay;
    bool cache_hit = false;
    grpc::Status status = Admit(/*stream=*/true, &delay, &cache_hit);
    DelayUnlessCancelled(context, delay);
    InferResponse reply;
    if (status.ok()) {
      Answer(request, cache_hit, &reply);
    } else {
      reply.set_request_id(request.request_id());
      reply.set_error_code(static_cast<int>(status.error_code()));
      reply.set_error_message(status.error_message());
    }
    if (!stream->Write(reply)) break;
  }
  return context->IsCancelled() ? grpc::Status::CANCELLED : grpc::Status::OK;
}

grpc::Status FakeTwinService::GetModelInfo(grpc::ServerContext* context,
                                           const twinmerge::v1::GetModelInfoRequest* request,
                                           twinmerge::v1::ModelInfo* reply) {
  absl::MutexLock lock(&mu_);
  ++model_info_calls_;
  if (!fail_all_.ok()) return fail_all_;
  *reply = model_info_;
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------------------------

FakeServer::~FakeServer() { Shutdown(); }

void FakeServer::SetServing(bool serving) {
  server_->GetHealthCheckService()->SetServingStatus(serving);
}

void FakeServer::Shutdown() {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  // A deadline of now cancels calls still in flight instead of waiting for them.
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
}

absl::StatusOr<std::unique_ptr<FakeServer>> StartFakeServer() {
  // Process-wide switch, read when a server is built.
  grpc::EnableDefaultHealthCheckService(true);
  auto fake = std::unique_ptr<FakeServer>(new FakeServer());
  fake->service_ = std::make_unique<FakeTwinService>();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(kLoopbackAnyPort, grpc::InsecureServerCredentials(), &fake->port_);
  builder.RegisterService(fake->service_.get());
  fake->server_ = builder.BuildAndStart();
  if (fake->server_ == nullptr || fake->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot start the fake server on ",
                                               kLoopbackAnyPort));
  }
  fake->address_ = absl::StrCat("127.0.0.1:", fake->port_);
  return fake;
}

}  // namespace twin::testing
