#include "liaison/yaml_util.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include <yaml-cpp/anchor.h>
#include <yaml-cpp/eventhandler.h>

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

// "line L, column C" of a mark (1-based).
std::string LineColumn(const YAML::Mark& mark) {
  return "line " + std::to_string(mark.line + 1) + ", column " + std::to_string(mark.column + 1);
}

// yaml-cpp's messages for a '*' that starts an alias: in a policy that is
// nearly always a field pattern written without quotes.
std::string AliasHint(const std::string& msg) {
  if (msg != YAML::ErrorMsg::ALIAS_NOT_FOUND && msg != YAML::ErrorMsg::UNKNOWN_ANCHOR) return "";
  return "; an unquoted * starts a YAML alias: write the field pattern in quotes, as '*': allow "
         "(or 'subject.*' for a group)";
}

// Walks the parse events and records every key that repeats an earlier key of
// the same map. yaml-cpp keeps only one value per key, so without this a
// second `accept:` block, a repeated `messages:` or a rule that lost its
// leading '-' (its keys then land in the rule above) would vanish silently.
class DuplicateKeyFinder : public YAML::EventHandler {
 public:
  explicit DuplicateKeyFinder(const std::string& file) : file_(file) {}

  const std::vector<std::string>& errors() const { return errors_; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    previous_start_ = document_start_;
    document_start_ = mark;
    ++documents_;
  }
  size_t documents() const { return documents_; }
  // Where the last document started, and the one before it.
  const YAML::Mark& document_start() const { return document_start_; }
  const YAML::Mark& previous_start() const { return previous_start_; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { Value(mark, "~", true); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { Value(mark, "", false); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string& value) override {
    Value(mark, value, true);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    Open(mark, /*map=*/false);
  }
  void OnSequenceEnd() override { Close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Open(mark, /*map=*/true);
  }
  void OnMapEnd() override { Close(); }

 private:
  struct Collection {
    bool map = false;
    bool expect_key = true;        // maps alternate key, value, key, ...
    std::string path;              // "release[2]" for messages
    std::string key;               // the current key (maps) ...
    size_t index = 0;              // ... or item index (sequences)
    std::map<std::string, YAML::Mark> keys;
  };

  // The path of the node that is about to start inside the innermost collection.
  std::string ChildPath() const {
    if (stack_.empty()) return "";
    const Collection& c = stack_.back();
    if (!c.map) return c.path + "[" + std::to_string(c.index) + "]";
    return c.path.empty() ? c.key : c.path + "." + c.key;
  }

  // A complete node (scalar, null, alias or collection) inside the innermost
  // collection; `text` is its key text when `scalar`.
  void Value(const YAML::Mark& mark, const std::string& text, bool scalar) {
    if (stack_.empty()) return;
    Collection& c = stack_.back();
    if (!c.map) {
      ++c.index;
      return;
    }
    if (c.expect_key) {
      c.key = scalar ? text : "?";
      if (scalar) {
        auto [it, fresh] = c.keys.emplace(text, mark);
        if (!fresh && errors_.size() < kMaxErrors) {
          const std::string path = c.path.empty() ? text : c.path + "." + text;
          errors_.push_back(file_ + ":" + std::to_string(mark.line + 1) + ":" +
                            std::to_string(mark.column + 1) + ": duplicate key '" + path +
                            "': first at " + LineColumn(it->second) +
                            "; YAML keeps only one of them. Remove one, or, if this starts a "
                            "new list item (a rule), begin it with '- '");
        }
      }
    }
    c.expect_key = !c.expect_key;
  }

  void Open(const YAML::Mark&, bool map) {
    Collection c;
    c.map = map;
    c.path = ChildPath();
    stack_.push_back(std::move(c));
  }

  void Close() {
    stack_.pop_back();
    Value(YAML::Mark(), "", /*scalar=*/false);  // the collection was a value (or key) of its parent
  }

  static constexpr size_t kMaxErrors = 50;
  const std::string& file_;
  size_t documents_ = 0;
  YAML::Mark document_start_, previous_start_;
  std::vector<Collection> stack_;
  std::vector<std::string> errors_;
};

std::vector<std::string> DuplicateKeys(const std::string& text, const std::string& file) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DuplicateKeyFinder finder(file);
  // Every file liaison reads holds one document. The loop stops at the
  // second: yaml-cpp 0.7 reports a top-level ',' as an empty document
  // without consuming it, again and again (found by fuzz_policy_load: a
  // policy file of one ',' hung the load, and with it a reload).
  while (parser.HandleNextDocument(finder)) {
    if (finder.documents() < 2) continue;
    std::vector<std::string> errors = finder.errors();
    const YAML::Mark& at = finder.document_start();
    if (at.pos <= finder.previous_start().pos) {
      errors.push_back(file + ":" + std::to_string(at.line + 1) + ":" + std::to_string(at.column + 1) +
                       ": YAML syntax error: the parser cannot go on from here (a ',' outside [ ] or { }?)");
    } else {
      errors.push_back(file + ":" + std::to_string(at.line + 1) + ":" + std::to_string(at.column + 1) +
                       ": a second YAML document starts here ('---'); this file holds one document: "
                       "remove the '---' and what follows, or merge the two");
    }
    return errors;
  }
  return finder.errors();
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
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::IoError("cannot read " + path);
  return ParseYaml(text.str(), path);
}

void ForEachYamlFile(const std::vector<std::string>& paths,
                     const std::function<void(size_t index, StatusOr<YAML::Node>& document)>& use) {
  // A chunk at a time, so that a large set is not held parsed all at once;
  // small sets (most) are read on the caller's thread alone.
  constexpr size_t kChunk = 256;
  constexpr size_t kAlone = 16;
  const size_t threads = paths.size() < kAlone ? 1 : std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 8);
  for (size_t begin = 0; begin < paths.size(); begin += kChunk) {
    const size_t end = std::min(paths.size(), begin + kChunk);
    std::vector<std::optional<StatusOr<YAML::Node>>> documents(end - begin);
    std::atomic<size_t> next{begin};
    auto parse = [&] {
      for (size_t i; (i = next.fetch_add(1)) < end;) {
        try {
          documents[i - begin].emplace(LoadYamlFile(paths[i]));
        } catch (const std::exception& e) {  // out of memory: the file's error, not the process's end
          documents[i - begin].emplace(Status::Internal("cannot read " + paths[i] + ": " + e.what()));
        }
      }
    };
    std::vector<std::thread> helpers;
    for (size_t t = 1; t < threads && t < end - begin; ++t) helpers.emplace_back(parse);
    parse();
    for (std::thread& helper : helpers) helper.join();
    for (size_t i = begin; i < end; ++i) use(i, *documents[i - begin]);
  }
}

StatusOr<YAML::Node> ParseYaml(const std::string& text, const std::string& file) {
  try {
    // Two passes: the event pass sees every key with its position, which the
    // node tree (keeping one value per key) no longer can.
    std::vector<std::string> duplicates = DuplicateKeys(text, file);
    if (!duplicates.empty()) {
      std::string all;
      for (const auto& d : duplicates) all += (all.empty() ? "" : "\n") + d;
      return Status::InvalidArgument(all);
    }
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    return Status::InvalidArgument(file + ":" + std::to_string(e.mark.line + 1) + ":" +
                                   std::to_string(e.mark.column + 1) + ": YAML syntax error: " +
                                   e.msg + AliasHint(e.msg));
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(file + ": " + e.what());
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
