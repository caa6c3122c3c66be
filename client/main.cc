// twin-client: talk to a TwinMerge server from the command line.
//
//   twin-client info
//   twin-client health [--service NAME]          exit 0 only when SERVING (container probe)
//   twin-client reload [--version V]             load V now (pins it) or, without V, LATEST
//   twin-client status                           serving version, target, reload counts
//   twin-client infer --text "..." | --ids 1,2,3 [--mask 1,1,0] [--task T] [--top_k K]
//                     [--temperature X] [--request_id ID]
//   twin-client generate --text "..." | --ids 1,2,3 [--task T] [--max_new_tokens N]
//                     [--sample_temperature X] [--sample_top_k K] [--sample_top_p P]
//                     [--sample_seed S] [--stop a,b] [--ignore_eos]   prints as it streams
//   twin-client bench --data DIR [--concurrency N | --rate R] [--duration_s S | --requests N]
//                     [--send_task] [--mix task0=3,task1=1] [--streams]
// Common flags: --target host:port (default localhost:50051), --timeout_ms, --lb round_robin.
// Exit codes: 0 ok, 1 RPC failure (or not SERVING), 2 usage error.
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/cli_format.h"
#include "client/generate_bench.h"
#include "client/load_generator.h"
#include "client/twin_client.h"
#include "client/workload.h"

ABSL_FLAG(std::string, target, "localhost:50051",
          "Server address: host:port, or dns:///name:port to use every address of a name");
ABSL_FLAG(int64_t, timeout_ms, 5000, "Deadline of each call, in milliseconds");
ABSL_FLAG(std::string, lb, "", "Client-side load balancing: '' (pick_first) or round_robin");
ABSL_FLAG(bool, health_check, false,
          "Client-side health checking: no calls to servers that report NOT_SERVING "
          "(draining); selects round_robin");
ABSL_FLAG(bool, tls, false, "Connect with TLS (implied by --ca, --cert, --key)");
ABSL_FLAG(std::string, ca, "", "PEM roots that signed the server's certificate (TLS)");
ABSL_FLAG(std::string, cert, "", "PEM client certificate, for servers that require mTLS");
ABSL_FLAG(std::string, key, "", "PEM private key of --cert");
ABSL_FLAG(std::string, server_name, "",
          "Verify the server's certificate against this name instead of the target's host");
ABSL_FLAG(std::string, admin_token_file, "",
          "reload/status: file whose first line is the Admin bearer token");
ABSL_FLAG(std::string, service, "", "health: the service to check ('' = the whole server)");
ABSL_FLAG(std::string, version, "",
          "reload: the version to load and pin ('' = follow LATEST again)");
ABSL_FLAG(int, reload_timeout_ms, 600000, "reload: how long to wait for the load to finish");
ABSL_FLAG(std::string, text, "", "infer: input text (tokenized by the server)");
ABSL_FLAG(std::string, ids, "", "infer: input token ids, e.g. 1,2,3");
ABSL_FLAG(std::string, mask, "", "infer: attention mask for --ids, e.g. 1,1,0");
ABSL_FLAG(std::string, task, "", "infer: the task whose head answers ('' = routed)");
ABSL_FLAG(int32_t, top_k, 0, "infer: router weights kept (0 = server default)");
ABSL_FLAG(double, temperature, 0, "infer: router softmax temperature (0 = server default)");
ABSL_FLAG(std::string, request_id, "", "infer: request id echoed in the reply");
ABSL_FLAG(int32_t, max_new_tokens, 0, "generate: new tokens at most (0 = server default)");
ABSL_FLAG(double, sample_temperature, 0, "generate: sampling temperature (0 = greedy)");
ABSL_FLAG(int32_t, sample_top_k, 0, "generate: keep the K most probable tokens (0 = all)");
ABSL_FLAG(double, sample_top_p, 0, "generate: nucleus sampling mass in (0, 1] (0 = 1)");
ABSL_FLAG(uint64_t, sample_seed, 0, "generate: sampler seed (0 = the server draws one)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "generate: stop sequences, comma-separated");
ABSL_FLAG(bool, ignore_eos, false, "generate: do not stop at end-of-sequence tokens");
ABSL_FLAG(bool, stop_at_eos, false,
          "bench --generate: stop at end-of-sequence tokens (default: every call generates "
          "--max_new_tokens, so runs compare)");
ABSL_FLAG(bool, show_tokens, false, "generate: also print the new token ids (stderr)");
ABSL_FLAG(std::string, data, "", "bench: directory of <task>.test.safetensors / .test.tsv");
ABSL_FLAG(int32_t, concurrency, 0, "bench: closed loop with N workers (default 1)");
ABSL_FLAG(double, rate, 0, "bench: open loop with R Poisson arrivals per second");
ABSL_FLAG(double, duration_s, 0, "bench: run this long (default 10 s unless --requests)");
ABSL_FLAG(int64_t, requests, 0, "bench: run this many requests");
ABSL_FLAG(bool, send_task, false, "bench: name the true task in every request");
ABSL_FLAG(std::string, mix, "", "bench: task weights, e.g. task0=3,task1=1 (default uniform)");
ABSL_FLAG(bool, streams, false, "bench: closed loop over InferStreams instead of unary calls");
ABSL_FLAG(int32_t, stream_window, 1, "bench: requests in flight per stream");
ABSL_FLAG(int32_t, max_outstanding, 256, "bench: open loop calls in flight at most");
ABSL_FLAG(uint64_t, seed, 1, "bench: seed of the task mix, examples and arrivals");
ABSL_FLAG(std::string, temperatures, "",
          "bench: LO,HI: per-request router temperatures, log-uniform in [LO, HI] "
          "(distinct router-weight mixtures); default the server's");
ABSL_FLAG(std::string, out_json, "", "bench: also write the figures as JSON to this file");
ABSL_FLAG(bool, generate, false,
          "bench: Generate calls (causal LM versions) with the data's texts as prompts; reports "
          "time to first token, inter-token latency and generated tokens/s");

namespace twin::client {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitRpcFailure = 1;
constexpr int kExitUsage = 2;
constexpr double kDefaultBenchDurationS = 10;

constexpr char kUsage[] =
    "twin-client: client of a TwinMerge server.\n"
    "  twin-client info\n"
    "  twin-client health [--service NAME]\n"
    "  twin-client reload [--version V]\n"
    "  twin-client status\n"
    "  twin-client infer --text \"...\" | --ids 1,2,3 [--mask 1,1,0] [--task T] [--top_k K]\n"
    "                    [--temperature X] [--request_id ID]\n"
    "  twin-client generate --text \"...\" | --ids 1,2,3 [--task T] [--max_new_tokens N]\n"
    "                    [--sample_temperature X] [--sample_top_k K] [--sample_top_p P]\n"
    "                    [--sample_seed S] [--stop a,b] [--ignore_eos] [--show_tokens]\n"
    "  twin-client bench --data DIR [--concurrency N | --rate R] [--duration_s S | --requests N]\n"
    "                    [--send_task] [--mix task0=3,task1=1] [--streams] [--stream_window W]\n"
    "                    [--max_outstanding M] [--seed S] [--temperatures LO,HI]\n"
    "                    [--out_json FILE]\n"
    "  twin-client bench --generate --data DIR [--concurrency N] [--max_new_tokens N]\n"
    "                    [--sample_temperature X] [--send_task] [--mix ...] [--out_json FILE]\n"
    "Common flags: --target host:port (default localhost:50051), --timeout_ms, --lb round_robin\n"
    "Exit codes: 0 ok, 1 RPC failure (or not SERVING), 2 usage error.\n";

int UsageError(const std::string& message) {
  std::cerr << "usage error: " << message << "\n\n" << kUsage;
  return kExitUsage;
}

int RpcFailure(const absl::Status& status) {
  std::cerr << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << "\n";
  return kExitRpcFailure;
}

// absl::ParseCommandLine exits with status 1 on a bad flag; check first so a usage error exits
// with kExitUsage instead. Mirrors absl's syntax: --name=value, --name value, --bool, --nobool.
bool CheckFlags(int argc, char** argv, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") return true;
    if (arg.size() < 2 || arg[0] != '-') continue;  // positional
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && eq == absl::string_view::npos && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr) {
      *error = absl::StrCat("unknown flag --", name);
      return false;
    }
    std::string value;
    if (eq != absl::string_view::npos) {
      value = std::string(arg.substr(eq + 1));
    } else if (flag->IsOfType<bool>()) {
      continue;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      *error = absl::StrCat("flag --", name, " needs a value");
      return false;
    }
    std::string parse_error;
    if (!flag->ParseFrom(value, &parse_error)) {
      *error = absl::StrCat("--", name, "=", value, ": ", parse_error);
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::unique_ptr<TwinClient>> MakeClient() {
  ClientOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  options.default_timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  options.load_balancing_policy = absl::GetFlag(FLAGS_lb);
  options.health_check = absl::GetFlag(FLAGS_health_check);
  options.tls = absl::GetFlag(FLAGS_tls);
  options.ca_file = absl::GetFlag(FLAGS_ca);
  options.cert_file = absl::GetFlag(FLAGS_cert);
  options.key_file = absl::GetFlag(FLAGS_key);
  options.server_name = absl::GetFlag(FLAGS_server_name);
  options.admin_token_file = absl::GetFlag(FLAGS_admin_token_file);
  return TwinClient::Create(options);
}

int RunInfo(TwinClient& client) {
  absl::StatusOr<twinmerge::v1::ModelInfo> info = client.GetModelInfo();
  if (!info.ok()) return RpcFailure(info.status());
  std::cout << FormatModelInfo(*info);
  return kExitOk;
}

int RunReload(TwinClient& client) {
  auto reloaded = client.Reload(absl::GetFlag(FLAGS_version),
                                absl::Milliseconds(absl::GetFlag(FLAGS_reload_timeout_ms)));
  if (!reloaded.ok()) return RpcFailure(reloaded.status());
  if (reloaded->changed()) {
    std::cout << "serving " << reloaded->version() << " (was "
              << (reloaded->previous_version().empty() ? "none" : reloaded->previous_version())
              << ", loaded in " << reloaded->seconds() << " s)\n";
  } else {
    std::cout << "serving " << reloaded->version() << " (unchanged)\n";
  }
  return kExitOk;
}

int RunStatus(TwinClient& client) {
  auto status = client.GetServingStatus();
  if (!status.ok()) return RpcFailure(status.status());
  std::cout << "version: " << (status->version().empty() ? "(none)" : status->version()) << "\n"
            << "serving: " << (status->serving() ? "yes" : "no") << "\n"
            << "target: " << status->target() << "\n"
            << "reloads: " << status->reloads() << "\n"
            << "reload failures: " << status->reload_failures() << "\n";
  if (!status->last_error().empty()) std::cout << "last error: " << status->last_error() << "\n";
  return kExitOk;
}

int RunHealth(TwinClient& client) {
  absl::StatusOr<std::string> status = client.Health(absl::GetFlag(FLAGS_service));
  if (!status.ok()) return RpcFailure(status.status());
  std::cout << *status << "\n";
  return *status == "SERVING" ? kExitOk : kExitRpcFailure;
}

int RunInfer(TwinClient& client) {
  const std::string text = absl::GetFlag(FLAGS_text);
  const std::string ids = absl::GetFlag(FLAGS_ids);
  const std::string mask = absl::GetFlag(FLAGS_mask);
  if (text.empty() == ids.empty()) return UsageError("infer needs exactly one of --text, --ids");
  if (!mask.empty() && ids.empty()) return UsageError("--mask goes with --ids");
  twinmerge::v1::InferRequest request;
  if (!text.empty()) {
    request.set_text(text);
  } else {
    absl::StatusOr<std::vector<int64_t>> id_list = ParseIdList(ids, "--ids");
    if (!id_list.ok()) return UsageError(std::string(id_list.status().message()));
    request.mutable_tokens()->mutable_input_ids()->Add(id_list->begin(), id_list->end());
    if (!mask.empty()) {
      absl::StatusOr<std::vector<int64_t>> mask_list = ParseIdList(mask, "--mask");
      if (!mask_list.ok()) return UsageError(std::string(mask_list.status().message()));
      if (mask_list->size() != id_list->size()) {
        return UsageError(absl::StrCat("--mask has ", mask_list->size(), " entries, --ids has ",
                                       id_list->size()));
      }
      request.mutable_tokens()->mutable_attention_mask()->Add(mask_list->begin(),
                                                              mask_list->end());
    }
  }
  request.set_task(absl::GetFlag(FLAGS_task));
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  request.mutable_routing()->set_top_k(absl::GetFlag(FLAGS_top_k));
  request.mutable_routing()->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  absl::StatusOr<twinmerge::v1::InferResponse> reply = client.Infer(request);
  if (!reply.ok()) return RpcFailure(reply.status());
  std::cout << FormatInferResponse(*reply);
  return kExitOk;
}

int RunGenerate(TwinClient& client) {
  const std::string text = absl::GetFlag(FLAGS_text);
  const std::string ids = absl::GetFlag(FLAGS_ids);
  if (text.empty() == ids.empty()) return UsageError("generate needs exactly one of --text, --ids");
  twinmerge::v1::GenerateRequest request;
  if (!text.empty()) {
    request.set_text(text);
  } else {
    absl::StatusOr<std::vector<int64_t>> id_list = ParseIdList(ids, "--ids");
    if (!id_list.ok()) return UsageError(std::string(id_list.status().message()));
    request.mutable_tokens()->mutable_input_ids()->Add(id_list->begin(), id_list->end());
  }
  request.set_task(absl::GetFlag(FLAGS_task));
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  request.mutable_routing()->set_top_k(absl::GetFlag(FLAGS_top_k));
  request.mutable_routing()->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  request.set_max_new_tokens(absl::GetFlag(FLAGS_max_new_tokens));
  twinmerge::v1::SamplingOptions* sampling = request.mutable_sampling();
  sampling->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_sample_temperature)));
  sampling->set_top_k(absl::GetFlag(FLAGS_sample_top_k));
  sampling->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_sample_top_p)));
  sampling->set_seed(absl::GetFlag(FLAGS_sample_seed));
  for (const std::string& stop : absl::GetFlag(FLAGS_stop)) request.add_stop(stop);
  request.set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  const bool show_tokens = absl::GetFlag(FLAGS_show_tokens);
  twinmerge::v1::GenerateResponse last;
  std::vector<int64_t> tokens;
  absl::Status status = client.Generate(
      request,
      [&](const twinmerge::v1::GenerateResponse& reply) {
        if (reply.router_weights_size() > 0 || !reply.batch_mode().empty()) {
          std::cerr << FormatGenerateStart(reply);
        }
        std::cout << reply.text() << std::flush;
        tokens.insert(tokens.end(), reply.token_ids().begin(), reply.token_ids().end());
        if (!reply.finish_reason().empty()) last = reply;
        return true;
      },
      absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  std::cout << "\n";
  if (!status.ok()) return RpcFailure(status);
  if (show_tokens) std::cerr << "tokens: " << absl::StrJoin(tokens, ",") << "\n";
  std::cerr << FormatGenerateEnd(last);
  return kExitOk;
}

std::string DescribeLoad(const LoadOptions& o, size_t examples, size_t tasks) {
  std::string out = absl::StrCat("load: ", examples, " examples over ", tasks, " tasks, ");
  if (o.mode == LoadOptions::Mode::kOpenLoop) {
    absl::StrAppend(&out, "open loop at ", o.rate_per_s, "/s (at most ", o.max_outstanding,
                    " outstanding)");
  } else {
    absl::StrAppend(&out, "closed loop, ", o.concurrency,
                    o.use_streams ? absl::StrCat(" streams (window ", o.stream_window, ")")
                                  : std::string(" workers"));
  }
  if (o.duration > absl::ZeroDuration()) {
    absl::StrAppend(&out, ", for ", absl::FormatDuration(o.duration));
  }
  if (o.max_requests > 0) absl::StrAppend(&out, ", at most ", o.max_requests, " requests");
  absl::StrAppend(&out, o.send_task ? ", task sent\n" : ", task routed\n");
  return out;
}

int WriteJson(const std::string& json) {
  const std::string path = absl::GetFlag(FLAGS_out_json);
  if (path.empty()) return kExitOk;
  std::ofstream out(path, std::ios::trunc);
  out << json;
  if (!out.good()) {
    std::cerr << "error: cannot write " << path << "\n";
    return kExitRpcFailure;
  }
  return kExitOk;
}

// Prints a bench result (LoadResult or GenerateBenchResult), writes its JSON, and exits 1 when
// no request succeeded.
template <typename Result>
int Report(const Result& result) {
  std::cout << result.Summary();
  if (int rc = WriteJson(result.Json()); rc != kExitOk) return rc;
  if (result.ok == 0) {
    std::cerr << "error: no request succeeded\n";
    return kExitRpcFailure;
  }
  return kExitOk;
}

int RunGenerateBenchCommand(TwinClient& client, const std::string& data) {
  if (absl::GetFlag(FLAGS_rate) > 0 || absl::GetFlag(FLAGS_streams)) {
    return UsageError("bench --generate is a closed loop: use --concurrency, not --rate/--streams");
  }
  GenerateBenchOptions options;
  options.concurrency = std::max(1, absl::GetFlag(FLAGS_concurrency));
  options.max_requests = absl::GetFlag(FLAGS_requests);
  double duration_s = absl::GetFlag(FLAGS_duration_s);
  if (duration_s == 0 && options.max_requests == 0) duration_s = kDefaultBenchDurationS;
  options.duration = absl::Seconds(duration_s);
  const int32_t max_new = absl::GetFlag(FLAGS_max_new_tokens);
  if (max_new > 0) options.max_new_tokens = max_new;
  options.ignore_eos = !absl::GetFlag(FLAGS_stop_at_eos);
  options.send_task = absl::GetFlag(FLAGS_send_task);
  options.sample_temperature = static_cast<float>(absl::GetFlag(FLAGS_sample_temperature));
  options.seed = absl::GetFlag(FLAGS_seed);
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  absl::StatusOr<Workload> workload = LoadWorkload(data);
  if (!workload.ok()) return UsageError(absl::StrCat("--data: ", workload.status().message()));
  absl::StatusOr<TaskMix> mix = TaskMix::Parse(absl::GetFlag(FLAGS_mix), workload->tasks);
  if (!mix.ok()) return UsageError(absl::StrCat("--mix: ", mix.status().message()));
  std::cout << "generate load: " << workload->size() << " prompts over " << workload->tasks.size()
            << " tasks, closed loop, " << options.concurrency << " workers, "
            << options.max_new_tokens << " new tokens each"
            << (options.send_task ? ", task sent\n" : ", task routed\n");
  absl::StatusOr<GenerateBenchResult> result = RunGenerateBench(&client, *workload, *mix, options);
  if (!result.ok()) return UsageError(std::string(result.status().message()));
  return Report(*result);
}

int RunBench(TwinClient& client) {
  const std::string data = absl::GetFlag(FLAGS_data);
  if (data.empty()) return UsageError("bench needs --data DIR");
  if (absl::GetFlag(FLAGS_generate)) return RunGenerateBenchCommand(client, data);
  LoadOptions options;
  const int32_t concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate_per_s = absl::GetFlag(FLAGS_rate);
  if (options.rate_per_s > 0 && concurrency > 0) {
    return UsageError("--concurrency (closed loop) and --rate (open loop) exclude each other");
  }
  options.mode = options.rate_per_s > 0 ? LoadOptions::Mode::kOpenLoop
                                        : LoadOptions::Mode::kClosedLoop;
  options.concurrency = concurrency > 0 ? concurrency : 1;
  options.use_streams = absl::GetFlag(FLAGS_streams);
  options.stream_window = absl::GetFlag(FLAGS_stream_window);
  options.max_outstanding = absl::GetFlag(FLAGS_max_outstanding);
  options.max_requests = absl::GetFlag(FLAGS_requests);
  double duration_s = absl::GetFlag(FLAGS_duration_s);
  if (duration_s == 0 && options.max_requests == 0) duration_s = kDefaultBenchDurationS;
  options.duration = absl::Seconds(duration_s);
  options.send_task = absl::GetFlag(FLAGS_send_task);
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  options.seed = absl::GetFlag(FLAGS_seed);
  if (const std::string t = absl::GetFlag(FLAGS_temperatures); !t.empty()) {
    const std::vector<std::string> parts = absl::StrSplit(t, ',');
    if (parts.size() != 2 || !absl::SimpleAtod(parts[0], &options.temperature_min) ||
        !absl::SimpleAtod(parts[1], &options.temperature_max)) {
      return UsageError(absl::StrCat("--temperatures: expected LO,HI, got '", t, "'"));
    }
  }

  absl::StatusOr<Workload> workload = LoadWorkload(data);
  if (!workload.ok()) return UsageError(absl::StrCat("--data: ", workload.status().message()));
  absl::StatusOr<TaskMix> mix = TaskMix::Parse(absl::GetFlag(FLAGS_mix), workload->tasks);
  if (!mix.ok()) return UsageError(absl::StrCat("--mix: ", mix.status().message()));
  std::cout << DescribeLoad(options, workload->size(), workload->tasks.size());
  absl::StatusOr<LoadResult> result = RunLoad(&client, *workload, *mix, options);
  if (!result.ok()) return UsageError(std::string(result.status().message()));
  return Report(*result);
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-h" || arg == "help") {
      std::cout << kUsage;
      return kExitOk;
    }
  }
  std::string flag_error;
  if (!CheckFlags(argc, argv, &flag_error)) return UsageError(flag_error);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() != 2) return UsageError("expected exactly one subcommand");
  const std::string command = positional[1];
  if (command != "info" && command != "health" && command != "infer" && command != "bench" &&
      command != "reload" && command != "status" && command != "generate") {
    return UsageError(absl::StrCat("unknown subcommand '", command, "'"));
  }
  absl::StatusOr<std::unique_ptr<TwinClient>> client = MakeClient();
  if (!client.ok()) return UsageError(std::string(client.status().message()));
  if (command == "info") return RunInfo(**client);
  if (command == "health") return RunHealth(**client);
  if (command == "reload") return RunReload(**client);
  if (command == "status") return RunStatus(**client);
  if (command == "infer") return RunInfer(**client);
  if (command == "generate") return RunGenerate(**client);
  return RunBench(**client);
}

}  // namespace
}  // namespace twin::client

int main(int argc, char** argv) { return twin::client::Main(argc, argv); }
