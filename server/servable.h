// A servable: one loaded artifact version (Engine) with its own fused-weight cache.
// Requests hold a shared_ptr to the servable they were admitted with, so a newer version can
// be swapped in while they finish on the old one.
//
// Thread-safety: immutable handle; the cache is thread-safe.
#ifndef TWIN_SERVER_SERVABLE_H_
#define TWIN_SERVER_SERVABLE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "server/engine.h"
#include "server/fused_cache.h"
#include "server/server_config.h"

namespace twin {

// The fuse function the fused-weight cache calls on a miss: theta(w) through `engine`.
inline FuseFunction FuserOf(const Engine* engine) {
  return [engine](const std::vector<double>& w) -> absl::StatusOr<std::shared_ptr<FusedValue>> {
    absl::StatusOr<std::shared_ptr<FusedModel>> model = engine->Fuse(w);
    if (!model.ok()) return model.status();
    return std::shared_ptr<FusedValue>(*std::move(model));
  };
}

struct Servable {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<FusedWeightCache> cache;
  std::map<std::string, int> task_index;  // task name -> index
  ServingMode mode = ServingMode::kTwin;
  // Resident weight sets outside the cache: static mode theta* (one entry), experts mode one
  // per task (by task index); empty in twin mode.
  std::vector<std::shared_ptr<FusedModel>> pinned;
  uint64_t pinned_bytes = 0;
};

}  // namespace twin

#endif  // TWIN_SERVER_SERVABLE_H_
