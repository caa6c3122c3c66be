#include "server/log.h"

#include <atomic>
#include <cstdio>

namespace twin {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARNING";
    case LogLevel::kError: return "ERROR";
  }
  return "INFO";
}

}  // namespace

bool SetLogLevel(const std::string& name) {
  LogLevel level;
  if (name == "debug") {
    level = LogLevel::kDebug;
  } else if (name == "info") {
    level = LogLevel::kInfo;
  } else if (name == "warning") {
    level = LogLevel::kWarning;
  } else if (name == "error") {
    level = LogLevel::kError;
  } else {
    return false;
  }
  g_min_level = static_cast<int>(level);
  return true;
}

void LogLine(LogLevel level, const std::string& message) {
  if (static_cast<int>(level) < g_min_level) return;
  std::fprintf(stderr, "[twin-server] %s %s\n", LevelName(level), message.c_str());
  std::fflush(stderr);
}

}  // namespace twin
