// AWS credentials from the environment or the shared credentials file, as the AWS CLI and
// SDKs find them (the subset that static credentials need).
//
// Order: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); else the profile
// AWS_PROFILE (default "default") of AWS_SHARED_CREDENTIALS_FILE (default
// $HOME/.aws/credentials), keys aws_access_key_id, aws_secret_access_key, aws_session_token.
// Messages name the variables, file and profile, never a secret.
//
// Thread-safety: reads the environment (getenv); do not call while another thread sets it.
#ifndef TWIN_CORE_STORE_INTERNAL_AWS_CREDENTIALS_H_
#define TWIN_CORE_STORE_INTERNAL_AWS_CREDENTIALS_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/store/s3_store.h"

namespace twin::s3_internal {

// section -> (lowercased key -> value). Handles '#'/';' comments, blank lines, spaces around
// '=', and "[profile name]" headers (as "name"). Indented continuation lines (nested values)
// are skipped. INVALID_ARGUMENT naming `source` and the line number for a line that is none
// of these.
using IniFile = std::map<std::string, std::map<std::string, std::string>>;
absl::StatusOr<IniFile> ParseIni(absl::string_view text, absl::string_view source);

// FAILED_PRECONDITION (naming what was looked at) when no credentials are found or a profile
// lacks a key.
absl::StatusOr<S3Credentials> LoadAwsCredentials();

}  // namespace twin::s3_internal

#endif  // TWIN_CORE_STORE_INTERNAL_AWS_CREDENTIALS_H_
