// twin-fusion-bench: the cost of fusing one cluster's weight set, against a memcpy of the same
// number of bytes (the memory-bandwidth limit of building it).
//
//   twin-fusion-bench --store file:///path/store [--version LATEST] [--cache DIR] [--reps 20]
//                     [--threads 1] [--out_json FILE]
//
// For every task (top-1 keys: theta* + that task's twin) and every adjacent pair of tasks
// (top-2 keys, weights 0.5/0.5): the median time of TwinWeights::Fuse (the GEMMs and adds) and
// of Engine::Fuse (the same plus cloning the module and setting its parameters: what a cache
// miss costs), the bytes the fused set adds beyond theta*, and the median memcpy of that many
// bytes. Prints a table and, with --out_json, the same figures as JSON.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/store/artifact_set.h"
#include "core/store/object_store.h"
#include "core/model/torch_runtime.h"
#include "core/merge/twin_weights.h"
#include "bench/serving/median_time.h"
#include "server/engine.h"

ABSL_FLAG(std::string, store, "", "Object store URI holding the published artifact set.");
ABSL_FLAG(std::string, version, "LATEST", "Artifact version.");
ABSL_FLAG(std::string, cache, "/tmp/twin-fusion-bench-cache", "Local blob cache.");
ABSL_FLAG(int, reps, 20, "Repetitions per measurement (the median is reported).");
ABSL_FLAG(int, threads, 1, "LibTorch intra-op threads.");
ABSL_FLAG(std::string, out_json, "", "Also write the figures as JSON here.");

namespace twin {
namespace {


struct Row {
  std::string key;
  int kept = 0;
  uint64_t bytes = 0;
  double fuse_s = 0, engine_fuse_s = 0, memcpy_s = 0;
};

int Main() {
  const std::string uri = absl::GetFlag(FLAGS_store);
  if (uri.empty()) {
    std::cerr << "twin-fusion-bench: --store is required\n";
    return 2;
  }
  const int reps = std::max(1, absl::GetFlag(FLAGS_reps));
  std::cerr << "twin-fusion-bench: " << ConfigureTorchRuntime({absl::GetFlag(FLAGS_threads)})
            << "\n";
  auto store = OpenObjectStore(uri);
  if (!store.ok()) {
    std::cerr << "twin-fusion-bench: " << store.status() << "\n";
    return 1;
  }
  auto version = ResolveVersion(store->get(), absl::GetFlag(FLAGS_version));
  if (!version.ok()) {
    std::cerr << "twin-fusion-bench: " << version.status() << "\n";
    return 1;
  }
  auto set = FetchArtifactSet(store->get(), *version, absl::GetFlag(FLAGS_cache), {});
  if (!set.ok()) {
    std::cerr << "twin-fusion-bench: " << set.status() << "\n";
    return 1;
  }
  auto twin = TwinWeights::Load(*set, c10::Device(c10::kCPU));
  auto engine = Engine::Load(*set, {.device = "cpu"});
  if (!twin.ok() || !engine.ok()) {
    std::cerr << "twin-fusion-bench: " << (twin.ok() ? engine.status() : twin.status()) << "\n";
    return 1;
  }
  const int t = static_cast<int>((*twin)->num_tasks());
  std::vector<std::vector<double>> keys;
  std::vector<std::string> names;
  for (int i = 0; i < t; ++i) {
    std::vector<double> w(t, 0.0);
    w[i] = 1.0;
    keys.push_back(w);
    names.push_back(absl::StrCat((*twin)->task_names()[i], "=1"));
  }
  for (int i = 0; i + 1 < t; ++i) {
    std::vector<double> w(t, 0.0);
    w[i] = w[i + 1] = 0.5;
    keys.push_back(w);
    names.push_back(absl::StrCat((*twin)->task_names()[i], "=0.5,", (*twin)->task_names()[i + 1],
                                 "=0.5"));
  }
  const NamedTensors& shared = (*twin)->shared();
  std::vector<Row> rows;
  for (size_t k = 0; k < keys.size(); ++k) {
    Row row;
    row.key = names[k];
    for (double w : keys[k]) row.kept += w > 0;
    auto fused = (*twin)->Fuse(keys[k]);
    if (!fused.ok()) {
      std::cerr << "twin-fusion-bench: " << fused.status() << "\n";
      return 1;
    }
    for (size_t i = 0; i < fused->size(); ++i) {
      if (!(*fused)[i].second.is_same(shared[i].second)) row.bytes += (*fused)[i].second.nbytes();
    }
    row.fuse_s = MedianSeconds(reps, [&] { (void)(*twin)->Fuse(keys[k]); });
    row.engine_fuse_s = MedianSeconds(reps, [&] { (void)(*engine)->Fuse(keys[k]); });
    std::vector<char> from(std::max<uint64_t>(row.bytes, 1), 1), to(from.size());
    row.memcpy_s = MedianSeconds(reps, [&] {
      std::memcpy(to.data(), from.data(), from.size());
      // Keep the copy observable so it is not optimised away.
      asm volatile("" : : "r"(to.data()) : "memory");
    });
    rows.push_back(row);
  }
  std::printf("version %s, theta* %.1f MB, twins %.1f MB, %d reps (median)\n",
              set->version.c_str(), (*twin)->shared_bytes() / 1e6, (*twin)->twin_bytes() / 1e6,
              reps);
  std::printf("%-28s %5s %10s %12s %16s %12s %10s\n", "key", "kept", "bytes", "fuse ms",
              "fuse+module ms", "memcpy ms", "fuse/memcpy");
  for (const Row& r : rows) {
    std::printf("%-28s %5d %10llu %12.3f %16.3f %12.4f %10.1f\n", r.key.c_str(), r.kept,
                static_cast<unsigned long long>(r.bytes), r.fuse_s * 1e3, r.engine_fuse_s * 1e3,
                r.memcpy_s * 1e3, r.memcpy_s > 0 ? r.fuse_s / r.memcpy_s : 0.0);
  }
  if (const std::string path = absl::GetFlag(FLAGS_out_json); !path.empty()) {
    std::ofstream out(path, std::ios::trunc);
    out << absl::StrFormat("{\"version\": \"%s\", \"shared_bytes\": %d, \"twin_bytes\": %d, "
                           "\"reps\": %d, \"keys\": [",
                           set->version, (*twin)->shared_bytes(), (*twin)->twin_bytes(), reps);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      out << absl::StrFormat("%s{\"key\": \"%s\", \"kept\": %d, \"bytes\": %d, \"fuse_s\": %.6g, "
                             "\"engine_fuse_s\": %.6g, \"memcpy_s\": %.6g}",
                             i ? ", " : "", r.key, r.kept, r.bytes, r.fuse_s, r.engine_fuse_s,
                             r.memcpy_s);
    }
    out << "]}\n";
    if (!out.good()) {
      std::cerr << "twin-fusion-bench: cannot write " << path << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace twin

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("twin-fusion-bench --store URI [--version V] [--reps N]");
  absl::ParseCommandLine(argc, argv);
  return twin::Main();
}
