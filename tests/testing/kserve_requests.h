// Building Open Inference Protocol (KServe v2) requests in tests.
//
//   ModelInferRequest r;
//   AddInput(&r, "input_ids", "INT64", {1, 2});
//   r.add_raw_input_contents(LittleEndian(258, 8) + LittleEndian(3, 8));
//
// Thread-safety: pure functions.
#ifndef TWIN_TESTS_TESTING_KSERVE_REQUESTS_H_
#define TWIN_TESTS_TESTING_KSERVE_REQUESTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "inference/grpc_predict_v2.pb.h"

namespace twin::testing {

// The low `width` bytes of `v`, least significant first (the protocol's raw encoding).
inline std::string LittleEndian(uint64_t v, int width) {
  std::string out;
  for (int b = 0; b < width; ++b) out.push_back(static_cast<char>((v >> (8 * b)) & 0xff));
  return out;
}

// Appends an input tensor with this name, datatype and shape (no contents).
inline inference::ModelInferRequest::InferInputTensor* AddInput(
    inference::ModelInferRequest* r, const std::string& name, const std::string& datatype,
    const std::vector<int64_t>& shape) {
  auto* t = r->add_inputs();
  t->set_name(name);
  t->set_datatype(datatype);
  for (int64_t d : shape) t->add_shape(d);
  return t;
}

}  // namespace twin::testing

#endif  // TWIN_TESTS_TESTING_KSERVE_REQUESTS_H_
