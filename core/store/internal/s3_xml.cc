#include "core/store/internal/s3_xml.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin::s3_internal {
namespace {

// S3 documents nest four levels deep; the limit only guards the recursion against hostile input.
constexpr int kMaxDepth = 32;
constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr absl::string_view kS3Namespace = "http://s3.amazonaws.com/doc/2006-03-01/";

absl::Status Malformed(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed XML: ", why));
}

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
         c == ':' || static_cast<unsigned char>(c) >= 0x80;
}

void AppendUtf8(uint32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

class Parser {
 public:
  explicit Parser(absl::string_view doc) : doc_(doc) {}

  absl::StatusOr<XmlElement> Document() {
    RETURN_IF_ERROR(SkipMisc());
    if (!LookingAt("<")) return Malformed("no root element");
    XmlElement root;
    RETURN_IF_ERROR(Element(0, &root));
    RETURN_IF_ERROR(SkipMisc());
    if (pos_ != doc_.size()) return Malformed("content after the root element");
    return root;
  }

 private:
  bool LookingAt(absl::string_view s) const { return absl::StartsWith(doc_.substr(pos_), s); }

  void SkipSpace() {
    while (pos_ < doc_.size() && absl::ascii_isspace(static_cast<unsigned char>(doc_[pos_]))) {
      ++pos_;
    }
  }

  // Moves past the next `terminator`; error when there is none.
  absl::Status SkipPast(absl::string_view terminator, absl::string_view what) {
    const size_t end = doc_.find(terminator, pos_);
    if (end == absl::string_view::npos) return Malformed(absl::StrCat("unterminated ", what));
    pos_ = end + terminator.size();
    return absl::OkStatus();
  }

  // Whitespace, the XML declaration, processing instructions, comments and a DOCTYPE.
  absl::Status SkipMisc() {
    while (true) {
      SkipSpace();
      if (LookingAt("<?")) {
        RETURN_IF_ERROR(SkipPast("?>", "processing instruction"));
      } else if (LookingAt("<!--")) {
        RETURN_IF_ERROR(SkipPast("-->", "comment"));
      } else if (LookingAt("<!DOCTYPE")) {
        RETURN_IF_ERROR(SkipPast(">", "DOCTYPE"));
      } else {
        return absl::OkStatus();
      }
    }
  }

  std::string Name() {
    const size_t start = pos_;
    while (pos_ < doc_.size() && IsNameChar(doc_[pos_])) ++pos_;
    return std::string(doc_.substr(start, pos_ - start));
  }

  static std::string LocalName(const std::string& name) {
    const size_t colon = name.rfind(':');
    return colon == std::string::npos ? name : name.substr(colon + 1);
  }

  // Skips attributes; sets *empty for a self-closing tag. Leaves pos_ after '>' or "/>".
  absl::Status Attributes(const std::string& tag, bool* empty) {
    while (true) {
      SkipSpace();
      if (LookingAt("/>")) {
        pos_ += 2;
        *empty = true;
        return absl::OkStatus();
      }
      if (LookingAt(">")) {
        ++pos_;
        *empty = false;
        return absl::OkStatus();
      }
      if (Name().empty()) return Malformed(absl::StrCat("bad attribute in <", tag, ">"));
      SkipSpace();
      if (!LookingAt("=")) return Malformed(absl::StrCat("attribute without value in <", tag, ">"));
      ++pos_;
      SkipSpace();
      if (pos_ >= doc_.size() || (doc_[pos_] != '"' && doc_[pos_] != '\'')) {
        return Malformed(absl::StrCat("unquoted attribute in <", tag, ">"));
      }
      const char quote = doc_[pos_++];
      const size_t end = doc_.find(quote, pos_);
      if (end == absl::string_view::npos) return Malformed("unterminated attribute value");
      pos_ = end + 1;
    }
  }

  // Parses the element starting at pos_ ('<') into *out.
  absl::Status Element(int depth, XmlElement* out) {
    if (depth > kMaxDepth) return Malformed("elements nested too deeply");
    ++pos_;  // '<'
    const std::string tag = Name();
    if (tag.empty()) return Malformed("element without a name");
    out->name = LocalName(tag);
    bool empty = false;
    RETURN_IF_ERROR(Attributes(tag, &empty));
    if (empty) return absl::OkStatus();
    while (true) {
      if (pos_ >= doc_.size()) return Malformed(absl::StrCat("unclosed <", tag, ">"));
      if (LookingAt("</")) {
        pos_ += 2;
        const std::string end_tag = Name();
        SkipSpace();
        if (end_tag != tag || !LookingAt(">")) {
          return Malformed(absl::StrCat("<", tag, "> closed by </", end_tag, ">"));
        }
        ++pos_;
        return absl::OkStatus();
      }
      if (LookingAt("<!--")) {
        RETURN_IF_ERROR(SkipPast("-->", "comment"));
      } else if (LookingAt("<![CDATA[")) {
        const size_t start = pos_ + 9;
        RETURN_IF_ERROR(SkipPast("]]>", "CDATA section"));
        out->text.append(doc_.data() + start, pos_ - 3 - start);
      } else if (LookingAt("<?")) {
        RETURN_IF_ERROR(SkipPast("?>", "processing instruction"));
      } else if (LookingAt("<")) {
        out->children.emplace_back();
        RETURN_IF_ERROR(Element(depth + 1, &out->children.back()));
      } else {
        size_t end = doc_.find('<', pos_);
        if (end == absl::string_view::npos) end = doc_.size();
        ASSIGN_OR_RETURN(std::string text, XmlUnescape(doc_.substr(pos_, end - pos_)));
        out->text += text;
        pos_ = end;
      }
    }
  }

  absl::string_view doc_;
  size_t pos_ = 0;
};

absl::StatusOr<XmlElement> ParseRoot(absl::string_view document, absl::string_view root_name) {
  ASSIGN_OR_RETURN(XmlElement root, ParseXml(document));
  if (root.name != root_name) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected an <", root_name, "> document, got <", root.name, ">"));
  }
  return root;
}

}  // namespace

const XmlElement* XmlElement::Child(absl::string_view child_name) const {
  for (const XmlElement& child : children) {
    if (child.name == child_name) return &child;
  }
  return nullptr;
}

std::string XmlElement::ChildText(absl::string_view child_name) const {
  const XmlElement* child = Child(child_name);
  return child == nullptr ? std::string() : child->text;
}

absl::StatusOr<XmlElement> ParseXml(absl::string_view document) {
  return Parser(document).Document();
}

absl::StatusOr<std::string> XmlUnescape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t amp = text.find('&', pos);
    if (amp == absl::string_view::npos) {
      out.append(text.data() + pos, text.size() - pos);
      break;
    }
    out.append(text.data() + pos, amp - pos);
    const size_t semicolon = text.find(';', amp);
    if (semicolon == absl::string_view::npos) return Malformed("'&' without ';'");
    const absl::string_view entity = text.substr(amp + 1, semicolon - amp - 1);
    if (entity == "lt") {
      out.push_back('<');
    } else if (entity == "gt") {
      out.push_back('>');
    } else if (entity == "amp") {
      out.push_back('&');
    } else if (entity == "quot") {
      out.push_back('"');
    } else if (entity == "apos") {
      out.push_back('\'');
    } else if (entity.size() > 1 && entity[0] == '#') {
      const bool hex = entity[1] == 'x' || entity[1] == 'X';
      const absl::string_view digits = entity.substr(hex ? 2 : 1);
      uint32_t code_point = 0;
      const bool parsed = !digits.empty() && (hex ? absl::SimpleHexAtoi(digits, &code_point)
                                                  : absl::SimpleAtoi(digits, &code_point));
      if (!parsed || code_point > kMaxCodePoint || digits[0] == '+' || digits[0] == '-') {
        return Malformed(absl::StrCat("bad character reference &", entity, ";"));
      }
      AppendUtf8(code_point, &out);
    } else {
      return Malformed(absl::StrCat("unknown entity &", entity, ";"));
    }
    pos = semicolon + 1;
  }
  return out;
}

std::string XmlEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<ListPage> ParseListObjectsV2(absl::string_view document) {
  ASSIGN_OR_RETURN(XmlElement root, ParseRoot(document, "ListBucketResult"));
  ListPage page;
  for (const XmlElement& child : root.children) {
    if (child.name != "Contents") continue;
    const XmlElement* key = child.Child("Key");
    if (key == nullptr || key->text.empty()) {
      return absl::InvalidArgumentError("ListBucketResult: <Contents> without a <Key>");
    }
    ObjectInfo info;
    info.key = key->text;
    const std::string size = std::string(absl::StripAsciiWhitespace(child.ChildText("Size")));
    if (!absl::SimpleAtoi(size, &info.size_bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ListBucketResult: bad <Size> \"", size, "\" for key \"", info.key, "\""));
    }
    page.objects.push_back(std::move(info));
  }
  const std::string truncated =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(root.ChildText("IsTruncated")));
  if (truncated != "true" && truncated != "false" && !truncated.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ListBucketResult: bad <IsTruncated> \"", truncated, "\""));
  }
  page.is_truncated = truncated == "true";
  page.next_continuation_token = root.ChildText("NextContinuationToken");
  return page;
}

S3Error ParseS3Error(absl::string_view document) {
  absl::StatusOr<XmlElement> root = ParseXml(document);
  if (!root.ok() || root->name != "Error") return S3Error{};
  return S3Error{root->ChildText("Code"), root->ChildText("Message")};
}

absl::StatusOr<std::string> ParseUploadId(absl::string_view document) {
  ASSIGN_OR_RETURN(XmlElement root, ParseRoot(document, "InitiateMultipartUploadResult"));
  std::string upload_id = root.ChildText("UploadId");
  if (upload_id.empty()) {
    return absl::InvalidArgumentError("InitiateMultipartUploadResult without an <UploadId>");
  }
  return upload_id;
}

std::string CompleteMultipartUploadBody(const std::vector<std::string>& etags) {
  std::string body = absl::StrCat("<CompleteMultipartUpload xmlns=\"", kS3Namespace, "\">");
  for (size_t i = 0; i < etags.size(); ++i) {
    absl::StrAppend(&body, "<Part><PartNumber>", i + 1, "</PartNumber><ETag>", XmlEscape(etags[i]),
                    "</ETag></Part>");
  }
  body += "</CompleteMultipartUpload>";
  return body;
}

}  // namespace twin::s3_internal
