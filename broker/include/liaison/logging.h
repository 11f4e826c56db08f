// The one logging setup for every liaison binary (spdlog).
//
// Log lines carry events and names (agency ids, key fingerprints, codes,
// field and rule names), never message contents or personal data.
#ifndef LIAISON_LOGGING_H_
#define LIAISON_LOGGING_H_

#include <cstdint>
#include <string>

#include "liaison/status.h"

namespace liaison {

struct LogOptions {
  std::string level = "info";    // trace, debug, info, warn, error, critical, off
  std::string format = "text";   // text, or json (one JSON object per line)
  bool console = true;           // to stderr
  std::string file;              // rotating file; empty = none
  uint64_t max_file_bytes = 10 * 1024 * 1024;
  uint64_t max_files = 5;
};

// Installs the default logger named `name`. Fails (leaving the previous
// logger in place) if the level is unknown or the file cannot be opened.
Status SetupLogging(const std::string& name, const LogOptions& options);

}  // namespace liaison

#endif  // LIAISON_LOGGING_H_
