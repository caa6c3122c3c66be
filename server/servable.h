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

#include "server/engine.h"
#include "server/fused_cache.h"

namespace twin {

struct Servable {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<FusedWeightCache> cache;
  std::map<std::string, int> task_index;  // task name -> index
};

}  // namespace twin

#endif  // TWIN_SERVER_SERVABLE_H_
