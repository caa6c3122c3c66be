// Status helpers missing from Debian's Abseil (20220623).
//
//   RETURN_IF_ERROR(store->Put(key, bytes));
//   ASSIGN_OR_RETURN(auto manifest, Manifest::Parse(text));
//
// Thread-safety: macros only; no state.
#ifndef TWIN_CORE_STATUS_MACROS_H_
#define TWIN_CORE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TWIN_STATUS_CONCAT_INNER_(a, b) a##b
#define TWIN_STATUS_CONCAT_(a, b) TWIN_STATUS_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                         \
  do {                                                \
    ::absl::Status _twin_status = (expr);             \
    if (!_twin_status.ok()) return _twin_status;      \
  } while (0)

#define TWIN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return std::move(tmp).status();    \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  TWIN_ASSIGN_OR_RETURN_IMPL_(TWIN_STATUS_CONCAT_(_twin_statusor_, __LINE__), lhs, expr)

namespace twin {

// Returns `status` with `context` prepended to its message, keeping the code.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " + std::string(status.message()));
}

}  // namespace twin

#endif  // TWIN_CORE_STATUS_MACROS_H_
