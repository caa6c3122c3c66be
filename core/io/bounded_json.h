// Parsing JSON from untrusted bytes (safetensors headers, manifests) with bounds that the
// plain nlohmann parser lacks:
// - a nesting limit, checked as the input is read: deeper input is refused before anything is
//   built, so no recursive walk (dump, copy, destruction) can overflow the stack;
// - duplicate keys in any object are an error (nlohmann keeps the last one silently);
// - linear time: values are built by a SAX handler into std::map objects. nlohmann's
//   callback parser rescans the parent container at every closed object, and ordered_json
//   searches its keys linearly, both quadratic in the number of entries.
//
//   std::vector<std::string> order;
//   ASSIGN_OR_RETURN(nlohmann::json header,
//                    ParseBoundedJson(text, {.max_depth = 3}, "model.safetensors header", &order));
//
// Errors are INVALID_ARGUMENT "<what>: ..." naming the problem (bytes outside printable ASCII
// in the parser's message are replaced by '?'); RESOURCE_EXHAUSTED when memory runs out.
// Thread-safety: a pure function.
#ifndef TWIN_CORE_IO_BOUNDED_JSON_H_
#define TWIN_CORE_IO_BOUNDED_JSON_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {

struct JsonLimits {
  // Containers nested deeper than this are refused; the top-level value is depth 1.
  int max_depth = 64;
};

// Parses `text` as one JSON value. When `top_level_keys` is given and the value is an object,
// it receives the object's keys in input order (std::map objects do not keep it).
absl::StatusOr<nlohmann::json> ParseBoundedJson(absl::string_view text, const JsonLimits& limits,
                                                absl::string_view what,
                                                std::vector<std::string>* top_level_keys = nullptr);

// `value.dump()` cut to at most `max_bytes` (with "..." when cut), for error messages about
// values of unbounded size.
std::string ShortDump(const nlohmann::json& value, size_t max_bytes = 120);

}  // namespace twin

#endif  // TWIN_CORE_IO_BOUNDED_JSON_H_
