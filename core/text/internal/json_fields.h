// Typed reads of optional fields of a JSON object, with errors naming the field
// ("tokenizer.json: model.unk_token: expected a string, got 3").
//
//   ASSIGN_OR_RETURN(bool lower, OptionalBool(config, "lowercase", true, "normalizer"));
//
// Thread-safety: pure functions.
#ifndef TWIN_CORE_TEXT_INTERNAL_JSON_FIELDS_H_
#define TWIN_CORE_TEXT_INTERNAL_JSON_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/io/bounded_json.h"

namespace twin {
namespace text_internal {

inline std::string FieldName(absl::string_view what, absl::string_view key) {
  return absl::StrCat(what, ".", key);
}

inline absl::Status FieldError(absl::string_view what, absl::string_view key,
                               absl::string_view expected, const nlohmann::json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(FieldName(what, key), ": expected ", expected, ", got ", ShortDump(got)));
}

// The field, or null when `object` lacks it.
inline const nlohmann::json& Field(const nlohmann::json& object, const std::string& key) {
  static const nlohmann::json kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

inline absl::StatusOr<bool> OptionalBool(const nlohmann::json& object, const std::string& key,
                                         bool fallback, absl::string_view what) {
  const nlohmann::json& v = Field(object, key);
  if (v.is_null()) return fallback;
  if (!v.is_boolean()) return FieldError(what, key, "a boolean", v);
  return v.get<bool>();
}

inline absl::StatusOr<std::optional<bool>> NullableBool(const nlohmann::json& object,
                                                        const std::string& key,
                                                        absl::string_view what) {
  const nlohmann::json& v = Field(object, key);
  if (v.is_null()) return std::optional<bool>();
  if (!v.is_boolean()) return FieldError(what, key, "a boolean or null", v);
  return std::optional<bool>(v.get<bool>());
}

inline absl::StatusOr<std::optional<std::string>> NullableString(const nlohmann::json& object,
                                                                 const std::string& key,
                                                                 absl::string_view what) {
  const nlohmann::json& v = Field(object, key);
  if (v.is_null()) return std::optional<std::string>();
  if (!v.is_string()) return FieldError(what, key, "a string", v);
  return std::optional<std::string>(v.get<std::string>());
}

inline absl::StatusOr<std::string> RequiredString(const nlohmann::json& object,
                                                  const std::string& key,
                                                  absl::string_view what) {
  const nlohmann::json& v = Field(object, key);
  if (!v.is_string()) return FieldError(what, key, "a string", v);
  return v.get<std::string>();
}

inline absl::StatusOr<int64_t> RequiredId(const nlohmann::json& object, const std::string& key,
                                          absl::string_view what) {
  const nlohmann::json& v = Field(object, key);
  if (!v.is_number_integer() || v.get<int64_t>() < 0) {
    return FieldError(what, key, "a non-negative integer id", v);
  }
  return v.get<int64_t>();
}

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_JSON_FIELDS_H_
