// An ObjectStore that passes every call to another one: tests derive from it and override the
// calls they want to fail, block or count.
//
//   class DownStore : public ForwardingObjectStore {
//     using ForwardingObjectStore::ForwardingObjectStore;
//     absl::StatusOr<std::string> Get(absl::string_view key) override { return Down(); }
//   };
//
// Thread-safety: as the inner store.
#ifndef TWIN_TESTS_TESTING_FORWARDING_STORE_H_
#define TWIN_TESTS_TESTING_FORWARDING_STORE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/store/object_store.h"

namespace twin::testing {

class ForwardingObjectStore : public ObjectStore {
 public:
  explicit ForwardingObjectStore(std::unique_ptr<ObjectStore> inner) : inner_(std::move(inner)) {}

  absl::StatusOr<std::string> Get(absl::string_view key) override { return inner_->Get(key); }
  absl::Status GetToFile(absl::string_view key, const std::string& path) override {
    return inner_->GetToFile(key, path);
  }
  absl::Status Put(absl::string_view key, absl::string_view bytes) override {
    return inner_->Put(key, bytes);
  }
  absl::Status PutFile(absl::string_view key, const std::string& path) override {
    return inner_->PutFile(key, path);
  }
  absl::StatusOr<ObjectInfo> Head(absl::string_view key) override { return inner_->Head(key); }
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) override {
    return inner_->List(prefix);
  }
  absl::Status Delete(absl::string_view key) override { return inner_->Delete(key); }
  std::string uri() const override { return inner_->uri(); }

 protected:
  ObjectStore& inner() { return *inner_; }

 private:
  std::unique_ptr<ObjectStore> inner_;
};

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_FORWARDING_STORE_H_
