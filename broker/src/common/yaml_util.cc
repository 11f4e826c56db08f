#include "liaison/yaml_util.h"

#include <algorithm>
#include <charconv>

namespace liaison {
namespace {

std::string JoinPath(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string YamlWhere(const std::string& file, const YAML::Node& node) {
  // A node for a missing key has no position (and throws when asked).
  if (!node.IsDefined()) return file;
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return file;
  return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

StatusOr<YAML::Node> LoadYamlFile(const std::string& path) {
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return Status::NotFound("cannot open " + path);
  } catch (const YAML::ParserException& e) {
    return Status::InvalidArgument(path + ":" + std::to_string(e.mark.line + 1) + ":" +
                                   std::to_string(e.mark.column + 1) + ": YAML syntax error: " +
                                   e.msg);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(path + ": " + e.what());
  }
}

std::string NearestName(std::string_view name, const std::vector<std::string>& known) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, name.size() / 3) + 1;
  for (const auto& candidate : known) {
    size_t d = EditDistance(name, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

void YamlReader::Error(const YAML::Node& node, const std::string& path, const std::string& what) {
  errors_.push_back(YamlWhere(file_, node) + ": " + (path.empty() ? "" : "'" + path + "': ") + what);
}

bool YamlReader::ExpectMap(const YAML::Node& node, const std::string& path,
                           const std::vector<std::string>& allowed) {
  if (!node.IsMap()) {
    Error(node, path, "expected a map of keys (key: value)");
    return false;
  }
  bool good = true;
  for (const auto& entry : node) {
    const std::string key = entry.first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string hint = NearestName(key, allowed);
    errors_.push_back(YamlWhere(file_, entry.first) + ": unknown key '" + JoinPath(path, key) + "'" +
                      (hint.empty() ? "" : "; did you mean '" + JoinPath(path, hint) + "'?"));
    good = false;
  }
  return good;
}

bool YamlReader::ReadString(const YAML::Node& map, const std::string& path, const char* key,
                            std::string* out, bool required) {
  const YAML::Node node = map[key];
  if (!node) {
    if (required) Error(map, path, std::string("missing required key '") + JoinPath(path, key) + "'");
    return !required;
  }
  if (!node.IsScalar()) {
    Error(node, JoinPath(path, key), "expected a text value");
    return false;
  }
  *out = node.Scalar();
  return true;
}

bool YamlReader::ReadUint(const YAML::Node& map, const std::string& path, const char* key,
                          uint64_t min, uint64_t max, uint64_t* out) {
  const YAML::Node node = map[key];
  if (!node) return true;
  const std::string& text = node.IsScalar() ? node.Scalar() : std::string();
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < min ||
      value > max) {
    Error(node, JoinPath(path, key),
          "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max));
    return false;
  }
  *out = value;
  return true;
}

bool YamlReader::ReadChoice(const YAML::Node& map, const std::string& path, const char* key,
                            const std::vector<std::string>& choices, std::string* out) {
  std::string value;
  if (!ReadString(map, path, key, &value)) return false;
  if (!map[key]) return true;
  if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    Error(map[key], JoinPath(path, key), "'" + value + "' is not one of: " + list);
    return false;
  }
  *out = value;
  return true;
}

bool YamlReader::ReadStringList(const YAML::Node& map, const std::string& path, const char* key,
                                std::vector<std::string>* out) {
  const YAML::Node node = map[key];
  if (!node) return true;
  if (!node.IsSequence()) {
    Error(node, JoinPath(path, key), "expected a list");
    return false;
  }
  bool good = true;
  for (size_t i = 0; i < node.size(); ++i) {
    if (!node[i].IsScalar()) {
      Error(node[i], JoinPath(path, key) + "[" + std::to_string(i) + "]", "expected a text value");
      good = false;
      continue;
    }
    out->push_back(node[i].Scalar());
  }
  return good;
}

Status YamlReader::ToStatus() const {
  if (errors_.empty()) return Status::Ok();
  std::string text;
  for (const auto& e : errors_) text += (text.empty() ? "" : "\n") + e;
  return Status::InvalidArgument(text);
}

void ReadLogOptions(YamlReader& r, const YAML::Node& log, const std::string& path, LogOptions* out) {
  if (!r.ExpectMap(log, path, {"level", "format", "console", "file", "max_file_bytes", "max_files"})) {
    return;
  }
  r.ReadChoice(log, path, "level", {"trace", "debug", "info", "warn", "error", "critical", "off"},
               &out->level);
  r.ReadChoice(log, path, "format", {"text", "json"}, &out->format);
  std::string console = out->console ? "true" : "false";
  r.ReadChoice(log, path, "console", {"true", "false"}, &console);
  out->console = console == "true";
  r.ReadString(log, path, "file", &out->file);
  r.ReadUint(log, path, "max_file_bytes", 4096, uint64_t{1} << 40, &out->max_file_bytes);
  r.ReadUint(log, path, "max_files", 1, 1000, &out->max_files);
}

}  // namespace liaison
