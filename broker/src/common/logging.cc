#include "liaison/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace liaison {
namespace {

constexpr char kHex[] = "0123456789abcdef";

bool IsPlainTokenChar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '/' || c == '@' || c == '+' || c == '-';
}

// Length of the well-formed UTF-8 sequence at the start of `s`, or 0.
size_t Utf8SequenceLength(std::string_view s) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  size_t n = 0;
  unsigned char low = 0x80, high = 0xbf;  // range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    n = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    n = 3;
    if (lead == 0xe0) low = 0xa0;
    if (lead == 0xed) high = 0x9f;  // no surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    n = 4;
    if (lead == 0xf0) low = 0x90;
    if (lead == 0xf4) high = 0x8f;
  } else {
    return 0;
  }
  if (s.size() < n || byte(1) < low || byte(1) > high) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return n;
}

// `text` as the inside of a JSON string: valid UTF-8 passes, every other
// byte is escaped, so that a line stays valid JSON whatever it holds.
void AppendJsonText(std::string_view text, spdlog::memory_buf_t& dest) {
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      if (const size_t n = Utf8SequenceLength(text.substr(i)); n > 0) {
        dest.append(text.data() + i, text.data() + i + n);
        i += n;
        continue;
      }
    }
    switch (c) {
      case '"': dest.append(std::string_view("\\\"")); break;
      case '\\': dest.append(std::string_view("\\\\")); break;
      case '\n': dest.append(std::string_view("\\n")); break;
      case '\r': dest.append(std::string_view("\\r")); break;
      case '\t': dest.append(std::string_view("\\t")); break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          const char esc[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xf]};
          dest.append(esc, esc + 6);
        } else {
          dest.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
}

void AppendJsonField(std::string_view key, std::string_view value, spdlog::memory_buf_t& dest) {
  dest.append(std::string_view(",\""));
  AppendJsonText(key, dest);
  dest.append(std::string_view("\":\""));
  AppendJsonText(value, dest);
  dest.push_back('"');
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Reads a value quoted by LogValue at the start of `text` (which starts
// with '"'); returns the bytes after the closing quote, or nullopt if it is
// not such a value.
std::optional<size_t> ReadQuoted(std::string_view text, std::string* value) {
  for (size_t i = 1; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"') return i + 1;
    if (c != '\\') {
      value->push_back(c);
      continue;
    }
    if (++i == text.size()) return std::nullopt;
    switch (text[i]) {
      case '"': value->push_back('"'); break;
      case '\\': value->push_back('\\'); break;
      case 'n': value->push_back('\n'); break;
      case 'r': value->push_back('\r'); break;
      case 't': value->push_back('\t'); break;
      case 'x': {
        if (i + 2 >= text.size() || HexDigit(text[i + 1]) < 0 || HexDigit(text[i + 2]) < 0) {
          return std::nullopt;
        }
        value->push_back(static_cast<char>(HexDigit(text[i + 1]) * 16 + HexDigit(text[i + 2])));
        i += 2;
        break;
      }
      default: return std::nullopt;
    }
  }
  return std::nullopt;
}

// %J (format json): the event's key=value pairs as JSON fields, and what is
// not such a pair (free text, a second line) as "msg". A key already taken
// (the line's own time, level, process, or a repeated one) ends the pairs:
// a client cannot make a field say two things.
class JsonEventFields : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string_view rest(msg.payload.data(), msg.payload.size());
    std::vector<std::string> keys = {"time", "level", "process", "msg"};
    std::string value;
    while (!rest.empty()) {
      const size_t eq = rest.find('=');
      if (eq == 0 || eq == std::string_view::npos) break;
      const std::string_view key = rest.substr(0, eq);
      if (!std::all_of(key.begin(), key.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
          }) ||
          std::find(keys.begin(), keys.end(), key) != keys.end()) {
        break;
      }
      value.clear();
      size_t end = eq + 1;
      if (end < rest.size() && rest[end] == '"') {
        const auto quoted = ReadQuoted(rest.substr(end), &value);
        if (!quoted) break;
        end += *quoted;
      } else {
        end = std::min(rest.find_first_of(" \n", end), rest.size());
        value.assign(rest.substr(eq + 1, end - eq - 1));
      }
      if (end < rest.size() && rest[end] != ' ' && rest[end] != '\n') break;
      AppendJsonField(key, value, dest);
      keys.emplace_back(key);
      rest.remove_prefix(std::min(end + 1, rest.size()));
    }
    if (!rest.empty()) AppendJsonField("msg", rest, dest);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEventFields>();
  }
};

}  // namespace

std::string LogValue(std::string_view text, size_t max_bytes) {
  const std::string_view kept = text.substr(0, max_bytes);
  if (!text.empty() && kept.size() == text.size() &&
      std::all_of(kept.begin(), kept.end(), [](char c) { return IsPlainTokenChar(c); })) {
    return std::string(kept);
  }
  std::string out = "\"";
  for (const char ch : kept) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          out += {'\\', 'x', kHex[c >> 4], kHex[c & 0xf]};
        } else {
          out.push_back(ch);
        }
    }
  }
  if (kept.size() < text.size()) out += "...[+" + std::to_string(text.size() - kept.size()) + " bytes]";
  out.push_back('"');
  return out;
}

Status SetupLogging(const std::string& name, const LogOptions& options) {
  auto level = spdlog::level::from_str(options.level);
  if (level == spdlog::level::off && options.level != "off") {
    return Status::InvalidArgument("unknown log level '" + options.level +
                                   "' (use trace, debug, info, warn, error, critical or off)");
  }
  if (options.format != "text" && options.format != "json") {
    return Status::InvalidArgument("unknown log format '" + options.format + "' (use text or json)");
  }
  std::vector<spdlog::sink_ptr> sinks;
  if (options.console) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!options.file.empty()) {
    try {
      // Owner-only whatever the umask, also each file a rotation opens:
      // logs name agencies, message ids and clients' addresses.
      spdlog::file_event_handlers handlers;
      handlers.after_open = [](const spdlog::filename_t& file, std::FILE* f) {
        if (::fchmod(::fileno(f), 0600) != 0) {
          throw spdlog::spdlog_ex("cannot make " + file + " readable by its owner only", errno);
        }
      };
      sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          options.file, options.max_file_bytes, options.max_files, /*rotate_on_open=*/false, handlers));
    } catch (const spdlog::spdlog_ex& e) {
      return Status::IoError("cannot open log file " + options.file + ": " + e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (options.format == "json") {
    formatter->add_flag<JsonEventFields>('J').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","process":"%n"%J})");
  } else {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %-5l %n: %v");
  }
  // UTC everywhere: logs from several hosts must line up.
  logger->set_formatter(std::move(formatter));
  logger->set_level(level);
  // Flushed line by line at info and above; a debug run (tests, an operator
  // chasing a problem) flushes every line it asked for.
  logger->flush_on(std::min(level, spdlog::level::info));
  spdlog::set_default_logger(logger);
  return Status::Ok();
}

}  // namespace liaison
