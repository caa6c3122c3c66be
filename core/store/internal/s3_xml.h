// The small part of XML that the S3 REST API needs: a tolerant element-tree parser for the
// responses (ListObjectsV2, errors, multipart uploads) and escaping for the request bodies.
//
// The parser handles the XML declaration, comments, processing instructions, CDATA sections,
// attributes (ignored), self-closing tags, namespace prefixes (dropped from names) and the
// predefined and numeric character entities. It rejects mismatched or unclosed tags, so a
// truncated response is an error rather than a silently shorter listing.
//
// Thread-safety: free functions without state.
#ifndef TWIN_CORE_STORE_INTERNAL_S3_XML_H_
#define TWIN_CORE_STORE_INTERNAL_S3_XML_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/store/object_store.h"

namespace twin::s3_internal {

struct XmlElement {
  std::string name;  // local name, without a namespace prefix
  std::string text;  // concatenated, unescaped character data directly inside this element
  std::vector<XmlElement> children;

  // The first child named `name`, or nullptr.
  const XmlElement* Child(absl::string_view child_name) const;
  // The text of the first child named `name`, or "" when there is none.
  std::string ChildText(absl::string_view child_name) const;
};

// Parses a whole document into its root element; INVALID_ARGUMENT naming the problem.
absl::StatusOr<XmlElement> ParseXml(absl::string_view document);

// Replaces &lt; &gt; &amp; &quot; &apos; and &#N; / &#xH; (as UTF-8); INVALID_ARGUMENT for an
// unknown or malformed entity.
absl::StatusOr<std::string> XmlUnescape(absl::string_view text);
// Escapes & < > " ' for use in element text or attribute values.
std::string XmlEscape(absl::string_view text);

// One page of a ListObjectsV2 response. Keys are full bucket keys, unescaped.
struct ListPage {
  std::vector<ObjectInfo> objects;
  bool is_truncated = false;
  std::string next_continuation_token;
};
absl::StatusOr<ListPage> ParseListObjectsV2(absl::string_view document);

// An S3 <Error> document's code and message; both empty when `document` is not one.
struct S3Error {
  std::string code;
  std::string message;
};
S3Error ParseS3Error(absl::string_view document);

// The UploadId of an InitiateMultipartUploadResult.
absl::StatusOr<std::string> ParseUploadId(absl::string_view document);

// The body of CompleteMultipartUpload for parts 1..etags.size() in order.
std::string CompleteMultipartUploadBody(const std::vector<std::string>& etags);

}  // namespace twin::s3_internal

#endif  // TWIN_CORE_STORE_INTERNAL_S3_XML_H_
