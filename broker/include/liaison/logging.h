// The one logging setup for every liaison binary (spdlog).
//
// Log lines carry events and names (agency ids, key fingerprints, codes,
// field and rule names), never message contents or personal data.
#ifndef LIAISON_LOGGING_H_
#define LIAISON_LOGGING_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

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

// Log lines are events of `key=value` pairs separated by one space
// ("event=connect agency=a role=sender"); with format json each pair
// becomes a field of the line's object, text that is not such a pair goes
// to "msg".

// The longest client-supplied value a log line carries, in bytes.
inline constexpr size_t kLogValueMaxBytes = 64;

// Any string a client chose (agent names, message ids, addresses, header
// values) as one log value: cut to `max_bytes` with a "...[+N bytes]" marker,
// and quoted with \" \\ \n \r \t \xNN escapes unless it is a plain token of
// [A-Za-z0-9._:/@+-]. So a value can neither end the line nor pose as
// another key=value pair, and a flood of long names cannot flood the log.
std::string LogValue(std::string_view text, size_t max_bytes = kLogValueMaxBytes);

}  // namespace liaison

#endif  // LIAISON_LOGGING_H_
