// Reading YAML configuration with errors that say where: every failure names
// the file, line and column, the key path, what was expected, and (for an
// unknown key) the nearest known key.
#ifndef LIAISON_YAML_UTIL_H_
#define LIAISON_YAML_UTIL_H_

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "liaison/logging.h"
#include "liaison/status.h"

namespace liaison {

// "file:line:col" of a node (1-based), or just "file" when the node has no mark.
std::string YamlWhere(const std::string& file, const YAML::Node& node);

// Parses a YAML file; a syntax error becomes "file:line:col: <reason>", and
// a key that repeats an earlier key of the same map is an error naming both
// positions (yaml-cpp would silently keep only one). Every liaison YAML file
// (policies, vocabulary, DPO tests, configs) is read through here.
StatusOr<YAML::Node> LoadYamlFile(const std::string& path);
// The same for YAML text; `file` names it in errors.
StatusOr<YAML::Node> ParseYaml(const std::string& text, const std::string& file);
// Loads each of `paths` as LoadYamlFile does and calls `use(i, document)`
// for each, in the order of `paths` and on the caller's thread. The files
// are parsed several at a time, on as many threads as the machine has cores
// (a policy set of thousands of agencies takes seconds to load, nearly all
// of it YAML parsing); at most a few hundred parsed documents are held at
// once. Returns once `use` has seen every path.
void ForEachYamlFile(const std::vector<std::string>& paths,
                     const std::function<void(size_t index, StatusOr<YAML::Node>& document)>& use);

// The known name closest to `name` by edit distance, if it is close enough to
// be a plausible typo; empty otherwise.
std::string NearestName(std::string_view name, const std::vector<std::string>& known);

// Collects the errors of one YAML document, so that a person sees all of
// them at once rather than one per run.
class YamlReader {
 public:
  explicit YamlReader(std::string file) : file_(std::move(file)) {}

  const std::string& file() const { return file_; }

  // Records an error at `node`, prefixed with `path` ("limits.max_frames").
  void Error(const YAML::Node& node, const std::string& path, const std::string& what);

  // Requires `node` to be a map whose keys are all in `allowed`.
  bool ExpectMap(const YAML::Node& node, const std::string& path,
                 const std::vector<std::string>& allowed);

  // Typed reads of node[key]; absent keys leave `out` unchanged (and record
  // an error only if `required`). Return false on a recorded error.
  bool ReadString(const YAML::Node& map, const std::string& path, const char* key,
                  std::string* out, bool required = false);
  bool ReadUint(const YAML::Node& map, const std::string& path, const char* key,
                uint64_t min, uint64_t max, uint64_t* out);
  bool ReadChoice(const YAML::Node& map, const std::string& path, const char* key,
                  const std::vector<std::string>& choices, std::string* out);
  bool ReadStringList(const YAML::Node& map, const std::string& path, const char* key,
                      std::vector<std::string>* out);

  bool ok() const { return errors_.empty(); }
  const std::vector<std::string>& errors() const { return errors_; }
  // OK, or InvalidArgument listing every error, one per line.
  Status ToStatus() const;

 private:
  std::string file_;
  std::vector<std::string> errors_;
};

// Reads a `log:` block (level, format, console, file, max_file_bytes,
// max_files) into `out`; the same block in every liaison config file.
void ReadLogOptions(YamlReader& r, const YAML::Node& log, const std::string& path, LogOptions* out);

}  // namespace liaison

#endif  // LIAISON_YAML_UTIL_H_
