#include "core/store/internal/aws_credentials.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/status_macros.h"

namespace twin::s3_internal {
namespace {

constexpr char kDefaultProfile[] = "default";

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

}  // namespace

absl::StatusOr<IniFile> ParseIni(absl::string_view text, absl::string_view source) {
  IniFile ini;
  std::map<std::string, std::string>* section = nullptr;
  bool previous_value_empty = false;  // an empty value opens a block of indented sub-keys
  int line_number = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_number;
    const bool indented = !raw.empty() && (raw[0] == ' ' || raw[0] == '\t');
    const absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (indented && previous_value_empty) continue;  // nested value, e.g. "s3 =\n  x = y"
    if (line.front() == '[') {
      if (line.back() != ']') {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ":", line_number, ": section header without ']'"));
      }
      absl::string_view name = absl::StripAsciiWhitespace(line.substr(1, line.size() - 2));
      if (absl::ConsumePrefix(&name, "profile ")) name = absl::StripAsciiWhitespace(name);
      section = &ini[std::string(name)];
      previous_value_empty = false;
      continue;
    }
    const size_t equals = line.find('=');
    if (equals == absl::string_view::npos || section == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ":", line_number,
          section == nullptr ? ": key before any [section]" : ": expected key = value"));
    }
    const std::string key =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, equals)));
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(equals + 1));
    (*section)[key] = std::string(value);
    previous_value_empty = value.empty();
  }
  return ini;
}

absl::StatusOr<S3Credentials> LoadAwsCredentials() {
  S3Credentials credentials;
  credentials.access_key_id = Env("AWS_ACCESS_KEY_ID");
  credentials.secret_access_key = Env("AWS_SECRET_ACCESS_KEY");
  if (!credentials.access_key_id.empty() || !credentials.secret_access_key.empty()) {
    if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "S3 credentials: ", credentials.access_key_id.empty()
                                  ? "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"
                                  : "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"));
    }
    credentials.session_token = Env("AWS_SESSION_TOKEN");
    return credentials;
  }

  std::string path = Env("AWS_SHARED_CREDENTIALS_FILE");
  if (path.empty()) {
    const std::string home = Env("HOME");
    path = home.empty() ? std::string() : absl::StrCat(home, "/.aws/credentials");
  }
  std::string profile = Env("AWS_PROFILE");
  if (profile.empty()) profile = kDefaultProfile;
  const std::string looked_at = absl::StrCat(
      "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set and the shared credentials file ",
      path.empty() ? "(no $HOME, no AWS_SHARED_CREDENTIALS_FILE)" : path);
  if (path.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("no S3 credentials: ", looked_at));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no S3 credentials: ", looked_at, " cannot be read (", std::strerror(errno), ")"));
  }
  std::stringstream text;
  text << in.rdbuf();
  ASSIGN_OR_RETURN(IniFile ini, ParseIni(text.str(), path));
  const auto section = ini.find(profile);
  if (section == ini.end()) {
    return absl::FailedPreconditionError(absl::StrCat("no S3 credentials: ", looked_at,
                                                      " has no profile [", profile,
                                                      "] (AWS_PROFILE selects one)"));
  }
  const auto value = [&](const char* key) {
    const auto it = section->second.find(key);
    return it == section->second.end() ? std::string() : it->second;
  };
  credentials.access_key_id = value("aws_access_key_id");
  credentials.secret_access_key = value("aws_secret_access_key");
  credentials.session_token = value("aws_session_token");
  if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "S3 credentials: profile [", profile, "] of ", path, " lacks ",
        credentials.access_key_id.empty() ? "aws_access_key_id" : "aws_secret_access_key"));
  }
  return credentials;
}

}  // namespace twin::s3_internal
