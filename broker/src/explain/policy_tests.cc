#include "explain/policy_tests.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "explain/explain.h"
#include "liaison/yaml_util.h"

namespace liaison::policy {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kCaseKeys = {"name", "from", "to", "message_file", "message", "expect"};
const std::vector<std::string> kExpectKeys = {"decision", "reason", "rules", "break_glass", "fields"};

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return in ? text.str() : std::string();
}

// Checks one case; returns the first difference, or "" when it holds.
std::string Check(const PolicySet& policies, const YAML::Node& c, const fs::path& file,
                  YamlReader& r) {
  std::string from_id, to_id, message_file, message_json;
  r.ReadString(c, "", "from", &from_id, true);
  r.ReadString(c, "", "to", &to_id, true);
  r.ReadString(c, "", "message_file", &message_file);
  r.ReadString(c, "", "message", &message_json);
  if (!r.ok()) return "the case is malformed (see above)";
  const broker::Agency* from = policies.directory().Find(from_id);
  const broker::Agency* to = policies.directory().Find(to_id);
  if (!from) return "from: no agency '" + from_id + "' in the policy set";
  if (!to) return "to: no agency '" + to_id + "' in the policy set";
  std::string source = "message";
  if (!message_file.empty()) {
    const fs::path path = file.parent_path() / message_file;
    message_json = ReadFile(path);
    if (message_json.empty()) return "message_file: cannot read " + path.string();
    source = path.string();
  }
  if (message_json.empty()) return "give the message as message_file or message";
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto binary = codec.ToBinary(message_json, source);
  if (!binary.ok()) return "the message is not valid: " + binary.status().message();
  // The broker's own admission decides, as for `liaison policy explain`.
  auto e = Explain(policies, *from, *to, *binary);
  if (!e.ok()) return e.status().message();

  const YAML::Node expect = c["expect"];
  if (!expect || !r.ExpectMap(expect, "expect", kExpectKeys)) return "missing or malformed 'expect'";
  std::string decision;
  r.ReadChoice(expect, "expect", "decision", {"released", "denied", "rejected"}, &decision);
  const std::string actual = e->released() ? "released" : e->rejected() ? "rejected" : "denied";
  // A rejection's reason is the broker's code (invalid_field, ...); its
  // detail names the field.
  const std::string actual_reason =
      e->released() ? "released" : e->rejected() ? wire::EnumNameCode(e->code) : e->reason;
  if (!decision.empty() && decision != actual) {
    return "decision: expected " + decision + ", got " + actual +
           (e->released() ? "" : " (" + actual_reason + (e->rejected() ? ": " + e->reason : "") + ")");
  }
  std::string reason;
  r.ReadString(expect, "expect", "reason", &reason);
  if (!reason.empty() && (e->released() || reason != actual_reason)) {
    return "reason: expected " + reason + ", got " + actual_reason;
  }
  std::vector<std::string> rules, got_rules;
  r.ReadStringList(expect, "expect", "rules", &rules);
  if (e->decision.release) got_rules.push_back(e->decision.release->id);
  if (e->decision.accept) got_rules.push_back(e->decision.accept->id);
  if (expect["rules"] && rules != got_rules) {
    std::string got;
    for (const auto& g : got_rules) got += (got.empty() ? "" : ", ") + g;
    return "rules: expected the rules listed, got [" + got + "]";
  }
  std::string break_glass;
  r.ReadChoice(expect, "expect", "break_glass", {"true", "false"}, &break_glass);
  if (!break_glass.empty() && (break_glass == "true") != e->decision.break_glass()) {
    return "break_glass: expected " + break_glass;
  }
  const YAML::Node fields = expect["fields"];
  if (fields) {
    if (!e->released()) return "fields: expected field actions, but the message is " + actual;
    for (const auto& entry : fields) {
      const std::string path = entry.first.Scalar();
      const std::string want = entry.second.Scalar();
      if (!ParseAction(want)) {
        r.Error(entry.second, "expect.fields." + path, "unknown action '" + want + "'");
        return "the case is malformed (see above)";
      }
      auto it = std::find_if(e->fields.begin(), e->fields.end(),
                             [&](const FieldExplanation& f) { return *f.path == path; });
      if (it == e->fields.end()) return "field " + path + ": not in the message";
      if (ActionText(it->action) != want) {
        return "field " + path + ": expected " + want + ", got " + ActionText(it->action) + " (" +
               (it->note.empty() ? "" : it->note + "; ") + "release " + it->release.at + ": " +
               it->release.entry + "; accept " + it->accept.at + ": " + it->accept.entry + ")";
      }
    }
  }
  return "";
}

}  // namespace

StatusOr<std::vector<PolicyTestResult>> RunPolicyTests(const PolicySet& policies,
                                                       const std::string& tests_dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(tests_dir, ec)) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  }
  if (ec) return Status::NotFound("cannot read " + tests_dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  std::vector<PolicyTestResult> results;
  std::vector<std::string> errors;
  for (const auto& file : files) {
    auto doc = LoadYamlFile(file.string());
    if (!doc.ok()) return doc.status();
    if (!doc->IsSequence()) {
      return Status::InvalidArgument(YamlWhere(file.string(), *doc) +
                                     ": expected a list of test cases (each starting with '- name:')");
    }
    for (const YAML::Node& c : *doc) {
      YamlReader r(file.string());
      PolicyTestResult result;
      result.where = YamlWhere(file.string(), c);
      if (!r.ExpectMap(c, "", kCaseKeys)) {
        errors.insert(errors.end(), r.errors().begin(), r.errors().end());
        continue;
      }
      r.ReadString(c, "", "name", &result.name, true);
      result.failure = Check(policies, c, file, r);
      result.passed = result.failure.empty();
      errors.insert(errors.end(), r.errors().begin(), r.errors().end());
      results.push_back(std::move(result));
    }
  }
  if (!errors.empty()) {
    std::string text;
    for (const auto& e : errors) text += (text.empty() ? "" : "\n") + e;
    return Status::InvalidArgument(text);
  }
  return results;
}

}  // namespace liaison::policy
