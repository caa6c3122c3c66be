// twin-server's log: one line per event on stderr, "[twin-server] LEVEL message", filtered by
// the configured level (server.yaml log_level: debug | info | warning | error).
//
//   SetLogLevel("warning");
//   LogLine(LogLevel::kWarning, "load of version v7 failed: ...");
//
// Thread-safety: safe from any thread (each line is written with one call).
#ifndef TWIN_SERVER_LOG_H_
#define TWIN_SERVER_LOG_H_

#include <string>

namespace twin {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Unknown names leave the level unchanged and return false.
bool SetLogLevel(const std::string& name);
void LogLine(LogLevel level, const std::string& message);

}  // namespace twin

#endif  // TWIN_SERVER_LOG_H_
