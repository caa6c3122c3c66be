// The S3 response parsers on arbitrary bodies: the XML tree, ListObjectsV2 pages, error
// documents, multipart upload ids, entities. Invariants: errors have messages; escaping then
// unescaping any text gives it back.
#include <string>

#include "core/store/internal/s3_xml.h"
#include "tests/fuzz/fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace s3 = twin::s3_internal;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto root = s3::ParseXml(text);
  FUZZ_CHECK_EXPLAINED(root.status());
  FUZZ_NOTE("xml " + root.status().ToString());
  auto page = s3::ParseListObjectsV2(text);
  FUZZ_NOTE("list " + page.status().ToString());
  FUZZ_CHECK_EXPLAINED(page.status());
  s3::ParseS3Error(text);
  auto upload = s3::ParseUploadId(text);
  FUZZ_CHECK_EXPLAINED(upload.status());
  auto unescaped = s3::XmlUnescape(text);
  FUZZ_CHECK_EXPLAINED(unescaped.status());
  auto round_trip = s3::XmlUnescape(s3::XmlEscape(text));
  FUZZ_CHECK(round_trip.ok() && *round_trip == text, "XmlUnescape(XmlEscape(t)) != t");
  return 0;
}
