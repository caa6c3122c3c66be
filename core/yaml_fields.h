// Strict reading of YAML configuration: unknown keys and wrongly typed values are errors that
// name the field path ("router.dropout"), prefixed with the document kind ("merge config").
//
//   const YamlFields fields("server config");
//   RETURN_IF_ERROR(fields.CheckKeys(root, "", {"listen_address", "workers"}));
//   RETURN_IF_ERROR(fields.Read(root, "workers", "", &config.workers));
//
// Header-only (yaml-cpp); users link yaml-cpp themselves. Thread-safety: immutable.
#ifndef TWIN_CORE_YAML_FIELDS_H_
#define TWIN_CORE_YAML_FIELDS_H_

#include <set>
#include <string>

#include <yaml-cpp/yaml.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace twin {

class YamlFields {
 public:
  explicit YamlFields(std::string kind) : kind_(std::move(kind)) {}

  // INVALID_ARGUMENT "<kind>: <field>: <what>".
  absl::Status Bad(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(kind_, ": ", field, ": ", what));
  }

  // `node` must be a mapping whose keys are all in `allowed`.
  absl::Status CheckKeys(const YAML::Node& node, const std::string& path,
                         const std::set<std::string>& allowed) const {
    if (!node.IsMap()) return Bad(path.empty() ? "(top level)" : path, "expected a mapping");
    for (const auto& kv : node) {
      // A key such as `[a]` or `{b: 1}` is a sequence or a mapping; as<std::string>() throws.
      if (!kv.first.IsScalar()) {
        return Bad(path.empty() ? "(top level)" : path,
                   absl::StrCat("has a key that is not a plain name (line ",
                                kv.first.Mark().line + 1, ")"));
      }
      const std::string key = kv.first.Scalar();
      if (!allowed.count(key)) {
        return Bad(Join(path, key),
                   absl::StrCat("unknown key (allowed: ", absl::StrJoin(allowed, ", "), ")"));
      }
    }
    return absl::OkStatus();
  }

  // Sets *out from node[key] when present; a value of the wrong type is an error.
  template <typename T>
  absl::Status Read(const YAML::Node& node, const std::string& key, const std::string& path,
                    T* out) const {
    const YAML::Node value = node[key];
    if (!value) return absl::OkStatus();
    try {
      *out = value.as<T>();
    } catch (const YAML::Exception&) {
      return Bad(Join(path, key), "has the wrong type");
    }
    return absl::OkStatus();
  }

 private:
  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  std::string kind_;
};

}  // namespace twin

#endif  // TWIN_CORE_YAML_FIELDS_H_
