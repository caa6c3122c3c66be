// server.yaml: twin-server's configuration. Every field has a default; unknown keys are errors.
//
//   listen_address: 0.0.0.0:50051       # gRPC
//   metrics_address: 0.0.0.0:9090       # Prometheus /metrics ("" = off)
//   artifact_uri: file:///var/lib/twin/store
//   artifact_version: LATEST
//   cache_dir: /var/cache/twin          # local copies of verified blobs
//   device: auto                        # auto | cpu | cuda | cuda:N
//   intra_op_threads: 0                 # LibTorch threads, 0 = all cores
//   workers: 1                          # batch worker threads
//   batching: {max_batch_size: 8, max_queue_delay_us: 2000, max_queue_size: 1024,
//              max_route_batch: 64,
//              deadline_admission: true}  # refuse at once what would miss its deadline
//   cache: {capacity_bytes: 1073741824, policy: fuse, admit_min_requests: 2,
//           frequency_window: 1000, max_nearest_distance: 0.4,
//           max_fusions_per_s: 0, fusion_burst: 0,   # 0: fusions unlimited
//           background_fusion: false,  # true: a miss is served by the nearest cached set
//                                      # while its key fuses on the cache's thread
//           max_pending_fusions: 4}    # keys queued for background fusion, at most
//   cluster_key: {top_k: 2, grid: 10}
//   routing: {max_top_k: 0, default_temperature: 1.0, min_temperature: 0.05,
//             max_temperature: 20.0,
//             task_given: task}          # task: a request that names its task is answered by
//                                        # that task's twin alone (weights one-hot, no router
//                                        # forward); router: the router weights it like any other
//   serving: {mode: twin,                # twin: Twin-Merging (router, fused-weight cache);
//                                        # static: theta* alone, no router, no fusion (one
//                                        # weight set: the throughput baseline); experts: one
//                                        # resident model per task (the accuracy and memory
//                                        # baseline), task given or else the router's top task
//             experts: {},               # experts mode: task name -> TorchScript .pt file with
//                                        # that task's fine-tuned weights (every task named;
//                                        # a Hugging Face directory for a native model)
//             engine: auto,              # auto: the version's native model when it has one
//                                        # (model.native), else TorchScript; torchscript; native
//             batches: auto,             # auto: fused or unfused chosen per batch from measured
//                                        # costs (native models); fused: one key per batch;
//                                        # unfused: always theta* + each row's own mixture
//             mix_strategy: grouped,     # unfused kernels: grouped (per task, its rows) or
//                                        # stacked (all tasks' factors in two GEMMs)
//             unfused_weights: key,      # what an unfused row mixes: key (its cluster key's
//                                        # quantised weights, as a fused batch of that key);
//                                        # router (the router's own weights over the key's
//                                        # tasks, renormalised: no grid rounding)
//             batch_choice: {hysteresis: 0.1, starvation_us: 50000, explore_every: 64,
//                            aging_us: 10000}}  # an option's rate counts (1 + its oldest
//                                        # request's wait / aging_us) times; 0: rate alone
//   limits: {max_input_length: 0, max_message_bytes: 4194304, max_request_id_bytes: 128,
//            max_text_bytes: 65536, max_stream_in_flight: 32,
//            max_in_flight_per_client: 0}   # per client address (0: no limit)
//   max_connection_age_ms: 300000       # GOAWAY after this, so L4 balancers rebalance
//   drain_grace_ms: 0                   # NOT_SERVING this long before GOAWAY
//   drain_timeout_ms: 30000             # the whole shutdown, from the signal
//   warmup_requests: 4
//   kserve: {model_name: twin-merging,  # model name on the Open Inference Protocol service
//            max_rows: 64}               # rows per ModelInfer call
//   reload: {poll_interval_ms: 30000,   # re-check artifact_version (LATEST) this often; 0 = never
//            retry_interval_ms: 2000,   # between attempts until the first load succeeds
//            keep_versions: 2,          # versions kept in cache_dir (the serving one included);
//                                       # 0 = never prune
//            warm_cache_keys: 16}       # hottest cluster keys pre-fused in a new version
//   generation: {default_max_new_tokens: 64,  # Generate (causal LM versions): when a request
//                                              # names none
//                max_new_tokens: 1024,    # a request's limit
//                max_sequences: 32,       # sequences decoded together in one step
//                max_step_tokens: 512,    # prompt and decode tokens per step (long prompts
//                                         # are read in chunks between decode steps)
//                kv_cache_bytes: 1073741824,  # KV memory of the admitted sequences, at most
//                max_queue: 256,          # requests waiting for KV memory; then refused
//                max_stop_sequences: 8,
//                mix_strategy: stacked}   # twin mode's step kernels (as serving.mix_strategy;
//                                         # stacked: fewest kernels for small decode batches)
//   log_level: info                     # debug | info | warning | error
//   tls: {cert_file: "", key_file: "",  # both set: the gRPC ports speak TLS only
//         client_ca_file: "",           # set: mTLS, clients need a certificate this CA signed
//         refresh_interval_s: 60}       # the files are re-read this often (rotation)
//   admin: {listen_address: 127.0.0.1:50052,  # twinmerge.v1.Admin only here ("": on
//                                              # listen_address with inference)
//           token_file: ""}             # set: Admin calls need "authorization: Bearer <token>"
//
// Thread-safety: plain value types.
#ifndef TWIN_SERVER_SERVER_CONFIG_H_
#define TWIN_SERVER_SERVER_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "core/model/mixed_params.h"
#include "server/cluster_key.h"
#include "server/fused_cache.h"
#include "server/request_queue.h"
#include "server/tls.h"

namespace twin {

struct ReloadConfig {
  int64_t poll_interval_ms = 30000;
  int64_t retry_interval_ms = 2000;
  int keep_versions = 2;
  int warm_cache_keys = 16;
};

// What answers a request (see serving.mode above).
enum class ServingMode { kTwin, kStatic, kExperts };
const char* ServingModeName(ServingMode mode);

// How a request that names its task is weighted (routing.task_given).
enum class TaskGivenPolicy { kTask, kRouter };

struct GenerationConfig {
  int64_t default_max_new_tokens = 64;
  int64_t max_new_tokens = 1024;
  int64_t max_sequences = 32;
  int64_t max_step_tokens = 512;
  int64_t kv_cache_bytes = int64_t{1} << 30;
  int64_t max_queue = 256;
  int max_stop_sequences = 8;
  MixStrategy mix_strategy = MixStrategy::kStacked;
};

struct ServerConfig {
  std::string listen_address = "0.0.0.0:50051";
  std::string metrics_address = "0.0.0.0:9090";
  std::string artifact_uri;
  std::string artifact_version = "LATEST";
  std::string cache_dir = "/tmp/twin-server-cache";
  std::string device = "auto";
  int intra_op_threads = 0;
  int workers = 1;
  RequestQueueOptions queue;
  int max_route_batch = 64;
  FusedCacheOptions cache;
  ClusterKeyOptions cluster_key;
  int max_top_k = 0;  // 0 = number of tasks
  double default_temperature = 1.0;
  double min_temperature = 0.05;
  double max_temperature = 20.0;
  TaskGivenPolicy task_given = TaskGivenPolicy::kTask;
  ServingMode mode = ServingMode::kTwin;
  std::map<std::string, std::string> experts;  // task -> path (experts mode)
  std::string engine_model = "auto";           // serving.engine
  std::string batches = "auto";                // serving.batches: auto | fused | unfused
  MixStrategy mix_strategy = MixStrategy::kGrouped;
  std::string unfused_weights = "key";  // serving.unfused_weights: key | router
  int max_input_length = 0;             // 0 = the tokenizer's max_length
  int max_message_bytes = 4 << 20;
  int max_request_id_bytes = 128;
  int max_text_bytes = 64 << 10;
  // Requests of one InferStream accepted but not yet written back: at the limit the stream
  // stops reading (HTTP/2 flow control then holds the client) until replies are written, so
  // one stream cannot grow memory or fill the shared queue.
  int max_stream_in_flight = 32;
  // Requests one client address (the peer without its port) may have accepted and unanswered
  // at once, over all its calls and streams; past it RESOURCE_EXHAUSTED. 0: no limit (behind a
  // proxy every request shares the proxy's address, so the default is off).
  int max_in_flight_per_client = 0;
  int64_t max_connection_age_ms = 300000;
  // Shutdown: NOT_SERVING, then drain_grace_ms of normal serving (load balancers stop
  // routing here), then GOAWAY; calls in flight and open streams' accepted requests are
  // answered until drain_timeout_ms after the signal, the overall limit of the shutdown.
  int64_t drain_grace_ms = 0;
  int64_t drain_timeout_ms = 30000;
  int warmup_requests = 4;
  std::string log_level = "info";
  // The one model that inference.GRPCInferenceService (KServe v2) serves.
  std::string kserve_model_name = "twin-merging";
  // Rows one ModelInfer call may carry (each is queued like one Infer request), so that one
  // call cannot take the whole queue; batching.max_queue_size caps it too.
  int kserve_max_rows = 64;
  ReloadConfig reload;
  GenerationConfig generation;
  TlsConfig tls;
  // twinmerge.v1.Admin (Reload, GetServingStatus) is served on its own address, loopback by
  // default, so that reaching the inference port does not let anyone change the version; ""
  // serves it on listen_address. With a token file every Admin call must carry
  // "authorization: Bearer <the file's first line>" (compared in constant time; the file is
  // re-read when it changes): UNAUTHENTICATED without one, PERMISSION_DENIED when it differs.
  std::string admin_listen_address = "127.0.0.1:50052";
  std::string admin_token_file;
};

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text);
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path);
// Range checks (also run by the parsers); errors name the field.
absl::Status ValidateServerConfig(const ServerConfig& config);

}  // namespace twin

#endif  // TWIN_SERVER_SERVER_CONFIG_H_
