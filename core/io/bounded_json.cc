#include "core/io/bounded_json.h"

#include <exception>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"

namespace twin {
namespace {

using Json = nlohmann::json;

std::string Printable(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return text;
}

// Builds the DOM with an explicit stack of the open containers. Pointers into the tree stay
// valid: an open container is the last element of its parent array (which grows only after
// it closes) or a std::map node.
class BoundedSax {
 public:
  BoundedSax(Json* root, int max_depth, std::vector<std::string>* top_level_keys)
      : root_(root), max_depth_(max_depth), top_level_keys_(top_level_keys) {}

  bool null() { return Scalar(nullptr); }
  bool boolean(bool v) { return Scalar(v); }
  bool number_integer(Json::number_integer_t v) { return Scalar(v); }
  bool number_unsigned(Json::number_unsigned_t v) { return Scalar(v); }
  bool number_float(Json::number_float_t v, const std::string&) { return Scalar(v); }
  bool string(std::string& v) { return Scalar(std::move(v)); }
  bool binary(Json::binary_t& v) { return Scalar(Json::binary(std::move(v))); }
  bool start_object(std::size_t) { return Open(Json::object()); }
  bool start_array(std::size_t) { return Open(Json::array()); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }
  bool key(std::string& k) {
    Json& object = *open_.back();
    if (object.contains(k)) {
      error_ = absl::StrCat("key '", Printable(k.substr(0, 80)),
                            "' appears more than once in one object");
      return false;
    }
    if (open_.size() == 1 && top_level_keys_ != nullptr) top_level_keys_->push_back(k);
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    error_ = absl::StrCat("not valid JSON: ", Printable(e.what()));
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool Scalar(Json v) {
    Add(std::move(v));
    return true;
  }
  // Places `v` where the parser is and returns where it now lives.
  Json* Add(Json v) {
    if (open_.empty()) {
      *root_ = std::move(v);
      return root_;
    }
    Json& parent = *open_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    Json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }
  bool Open(Json container) {
    if (static_cast<int>(open_.size()) >= max_depth_) {
      error_ = absl::StrCat("nests deeper than ", max_depth_, " levels");
      return false;
    }
    Json* added = Add(std::move(container));
    open_.push_back(added);
    return true;
  }
  bool Close() {
    open_.pop_back();
    return true;
  }

  Json* root_;
  const int max_depth_;
  std::vector<std::string>* top_level_keys_;
  std::vector<Json*> open_;
  std::string key_;
  std::string error_;
};

}  // namespace

absl::StatusOr<Json> ParseBoundedJson(absl::string_view text, const JsonLimits& limits,
                                      absl::string_view what,
                                      std::vector<std::string>* top_level_keys) {
  if (top_level_keys != nullptr) top_level_keys->clear();
  Json root;
  try {
    BoundedSax sax(&root, limits.max_depth, top_level_keys);
    const bool ok = Json::sax_parse(text.begin(), text.end(), &sax);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", sax.error().empty() ? "not valid JSON" : sax.error()));
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory parsing ",
                                                     text.size(), " bytes of JSON"));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON: ", Printable(e.what())));
  }
  return root;
}

std::string ShortDump(const Json& value, size_t max_bytes) {
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
  if (text.size() > max_bytes) {
    text.resize(max_bytes);
    text += "...";
  }
  return text;
}

}  // namespace twin
