// Reads the keys of one Hugging Face config.json object with errors that name the file and
// the key. Absent and null are the same: transformers writes null for unset optional values.
//
//   ConfigReader r(json, path);
//   ASSIGN_OR_RETURN(int64_t d, r.RequiredInt("hidden_size", 1));
//   ASSIGN_OR_RETURN(double eps, r.OptionalPositive("rms_norm_eps", 1e-6));
//
// Thread-safety: a view of `json` and `path`, which must outlive it; const methods only.
#ifndef TWIN_CORE_MODEL_INTERNAL_CONFIG_READER_H_
#define TWIN_CORE_MODEL_INTERNAL_CONFIG_READER_H_

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/io/bounded_json.h"
#include "core/status_macros.h"

namespace twin::internal {

class ConfigReader {
 public:
  using Json = nlohmann::json;

  ConfigReader(const Json& json, const std::string& path) : json_(json), path_(path) {}

  const std::string& path() const { return path_; }

  absl::Status Error(absl::string_view key, absl::string_view problem) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": '", key, "' ", problem));
  }
  const Json* Find(const std::string& key) const {
    auto it = json_.find(key);
    return it == json_.end() || it->is_null() ? nullptr : &*it;
  }
  absl::StatusOr<const Json*> Require(const std::string& key) const {
    const Json* value = Find(key);
    if (value == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": missing required key '", key, "'"));
    }
    return value;
  }
  absl::StatusOr<int64_t> Int(const std::string& key, const Json& value, int64_t min) const {
    if (!value.is_number_integer()) {
      return Error(key, absl::StrCat("must be an integer, not ", ShortDump(value)));
    }
    if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return Error(key, absl::StrCat("is out of range: ", ShortDump(value)));
    }
    const int64_t v = value.get<int64_t>();
    if (v < min) return Error(key, absl::StrCat("must be at least ", min, ", not ", v));
    return v;
  }
  absl::StatusOr<int64_t> RequiredInt(const std::string& key, int64_t min) const {
    ASSIGN_OR_RETURN(const Json* value, Require(key));
    return Int(key, *value, min);
  }
  absl::StatusOr<int64_t> OptionalInt(const std::string& key, int64_t min, int64_t fallback) const {
    const Json* value = Find(key);
    return value == nullptr ? fallback : Int(key, *value, min);
  }
  // A finite number > 0 (integers are numbers too: "rope_theta": 10000).
  absl::StatusOr<double> Positive(const std::string& key, const Json& value) const {
    if (!value.is_number() || !std::isfinite(value.get<double>()) || !(value.get<double>() > 0)) {
      return Error(key, absl::StrCat("must be a positive number, not ", ShortDump(value)));
    }
    return value.get<double>();
  }
  absl::StatusOr<double> OptionalPositive(const std::string& key, double fallback) const {
    const Json* value = Find(key);
    return value == nullptr ? fallback : Positive(key, *value);
  }
  absl::StatusOr<bool> OptionalBool(const std::string& key, bool fallback) const {
    const Json* value = Find(key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) {
      return Error(key, absl::StrCat("must be true or false, not ", ShortDump(*value)));
    }
    return value->get<bool>();
  }
  absl::StatusOr<std::string> OptionalString(const std::string& key,
                                             const std::string& fallback) const {
    const Json* value = Find(key);
    if (value == nullptr) return fallback;
    if (!value->is_string()) {
      return Error(key, absl::StrCat("must be a string, not ", ShortDump(*value)));
    }
    return value->get<std::string>();
  }

 private:
  const Json& json_;
  const std::string& path_;
};

}  // namespace twin::internal

#endif  // TWIN_CORE_MODEL_INTERNAL_CONFIG_READER_H_
