#include "registry/agency_directory.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include "liaison/keys.h"
#include "liaison/wire.h"
#include "liaison/yaml_util.h"

namespace liaison::broker {
namespace {

namespace fs = std::filesystem;

// Keys an agency file may hold. The identity keys are read here; the rules
// are read by the policy engine.
const std::vector<std::string> kAgencyKeys = {"id",     "name",    "kind",   "region",
                                              "public_key", "previous_public_key",
                                              "previous_key_valid_until", "contact", "release", "accept",
                                              "retention", "dpo", "escalation"};

struct Vocabulary {
  std::vector<std::string> kinds;
  std::vector<std::string> regions;
};

// Reads the keys of the maps `kinds` and `regions` of vocabulary.yaml.
Vocabulary ReadVocabulary(const YAML::Node& root, YamlReader& r) {
  Vocabulary v;
  for (const char* section : {"kinds", "regions"}) {
    const YAML::Node node = root[section];
    if (!node || !node.IsMap()) {
      r.Error(node ? node : root, section, "expected a map of ids to descriptions");
      continue;
    }
    auto& out = std::string_view(section) == "kinds" ? v.kinds : v.regions;
    for (const auto& entry : node) out.push_back(entry.first.Scalar());
  }
  return v;
}

void CheckTerm(YamlReader& r, const YAML::Node& agency, const char* key, const std::string& value,
               const std::vector<std::string>& known, const char* what) {
  if (value.empty() || std::find(known.begin(), known.end(), value) != known.end()) return;
  std::string hint = NearestName(value, known);
  r.Error(agency[key], key,
          "unknown " + std::string(what) + " '" + value + "' (not in vocabulary.yaml)" +
              (hint.empty() ? "" : "; did you mean '" + hint + "'?"));
}

}  // namespace

StatusOr<std::shared_ptr<const AgencyDirectory>> AgencyDirectory::Load(
    const std::string& policies_dir, std::vector<std::string>* warnings) {
  const fs::path dir(policies_dir);
  const std::string vocabulary_path = (dir / "vocabulary.yaml").string();
  auto vocabulary_doc = LoadYamlFile(vocabulary_path);
  if (!vocabulary_doc.ok()) return vocabulary_doc.status();
  YamlReader vocabulary_reader(vocabulary_path);
  const Vocabulary vocabulary = ReadVocabulary(*vocabulary_doc, vocabulary_reader);
  std::vector<std::string> errors = vocabulary_reader.errors();

  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir / "agencies", ec)) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  }
  if (ec) return Status::NotFound("cannot read " + (dir / "agencies").string() + ": " + ec.message());
  std::sort(files.begin(), files.end());

  std::vector<Agency> agencies;
  std::map<std::string, std::string> key_owner;  // Z85 key -> agency id
  // escalation.agency nodes, checked once every agency is known.
  std::vector<std::pair<std::string, YAML::Node>> escalations;  // (file, node)
  std::vector<std::string> paths;
  for (const auto& file : files) paths.push_back(file.string());
  ForEachYamlFile(paths, [&](size_t i, StatusOr<YAML::Node>& doc) {
    const fs::path& file = files[i];
    if (!doc.ok()) {
      errors.push_back(doc.status().message());
      return;
    }
    YamlReader r(file.string());
    Agency a;
    a.source = file.string();
    if (r.ExpectMap(*doc, "", kAgencyKeys)) {
      r.ReadString(*doc, "", "id", &a.id, true);
      r.ReadString(*doc, "", "name", &a.name, true);
      r.ReadString(*doc, "", "kind", &a.kind, true);
      r.ReadString(*doc, "", "region", &a.region, true);
      r.ReadString(*doc, "", "public_key", &a.public_key);
      std::string previous_until;
      r.ReadString(*doc, "", "previous_public_key", &a.previous_public_key);
      r.ReadString(*doc, "", "previous_key_valid_until", &previous_until);
      if (!a.previous_public_key.empty()) {
        const auto until = wire::ParseRfc3339Millis(previous_until);
        if (!until) {
          r.Error((*doc)["previous_public_key"], "previous_key_valid_until",
                  "previous_public_key needs previous_key_valid_until: when the overlap ends, as RFC 3339 "
                  "(e.g. 2026-12-01T00:00:00Z)");
        } else if (!IsValidZ85Key(a.previous_public_key)) {
          r.Error((*doc)["previous_public_key"], "previous_public_key",
                  "not a 40-character Z85 CURVE public key (the agency's old .pub file)");
        } else if (auto [it, fresh] = key_owner.emplace(a.previous_public_key, a.id); !fresh) {
          r.Error((*doc)["previous_public_key"], "previous_public_key",
                  it->second == a.id ? std::string("the previous key is the same as the current one")
                                     : "this key is registered for agency '" + it->second + "'");
        } else {
          a.previous_raw_key = DecodeZ85Key(a.previous_public_key);
          a.previous_valid_until_ms = *until;
        }
      } else if (!previous_until.empty()) {
        r.Error((*doc)["previous_key_valid_until"], "previous_key_valid_until",
                "set only together with previous_public_key");
      }
      if (const YAML::Node escalation = (*doc)["escalation"]; escalation) {
        if (r.ExpectMap(escalation, "escalation", {"agency"}) &&
            r.ReadString(escalation, "escalation", "agency", &a.escalation_agency, true) &&
            !a.escalation_agency.empty()) {
          escalations.emplace_back(file.string(), escalation["agency"]);
        }
      }
      CheckTerm(r, *doc, "kind", a.kind, vocabulary.kinds, "agency kind");
      CheckTerm(r, *doc, "region", a.region, vocabulary.regions, "region");
      if (!a.id.empty() && a.id != file.stem().string()) {
        r.Error((*doc)["id"], "id",
                "id '" + a.id + "' does not match the file name; name the file " + a.id + ".yaml");
      }
      if (!a.public_key.empty()) {
        if (!IsValidZ85Key(a.public_key)) {
          r.Error((*doc)["public_key"], "public_key",
                  "not a 40-character Z85 CURVE public key (the .pub file from `liaison keygen`)");
        } else if (auto [it, fresh] = key_owner.emplace(a.public_key, a.id); !fresh) {
          r.Error((*doc)["public_key"], "public_key",
                  "this key is already registered for agency '" + it->second +
                      "'; each agency needs its own key pair");
        } else {
          a.raw_key = DecodeZ85Key(a.public_key);
        }
      } else if (warnings) {
        warnings->push_back(file.string() + ": agency '" + a.id +
                            "' has no public_key yet; it cannot connect until one is registered");
      }
    }
    errors.insert(errors.end(), r.errors().begin(), r.errors().end());
    if (r.ok()) agencies.push_back(std::move(a));
  });
  // An escalation contact must be a registered agency: a typo would
  // otherwise send overdue referrals' notices nowhere.
  std::vector<std::string> ids;
  for (const Agency& a : agencies) ids.push_back(a.id);
  for (const auto& [file, node] : escalations) {
    const std::string id = node.Scalar();
    if (std::find(ids.begin(), ids.end(), id) != ids.end()) continue;
    YamlReader r(file);
    const std::string hint = NearestName(id, ids);
    r.Error(node, "escalation.agency",
            "unknown agency '" + id + "' (no agencies/" + id + ".yaml)" +
                (hint.empty() ? "" : "; did you mean '" + hint + "'?") +
                "; name the agency that overdue referrals are escalated to");
    errors.insert(errors.end(), r.errors().begin(), r.errors().end());
  }
  if (!errors.empty()) {
    std::string text;
    for (const auto& e : errors) text += (text.empty() ? "" : "\n") + e;
    return Status::InvalidArgument(text);
  }
  if (agencies.empty()) {
    return Status::InvalidArgument((dir / "agencies").string() +
                                   ": no agency files (*.yaml); register at least one agency");
  }
  return FromAgencies(std::move(agencies));
}

std::shared_ptr<const AgencyDirectory> AgencyDirectory::FromAgencies(std::vector<Agency> agencies) {
  std::shared_ptr<AgencyDirectory> d(new AgencyDirectory());
  d->agencies_ = std::move(agencies);
  std::sort(d->agencies_.begin(), d->agencies_.end(),
            [](const Agency& a, const Agency& b) { return a.id < b.id; });
  d->BuildIndexes();
  return d;
}

void AgencyDirectory::BuildIndexes() {
  for (const Agency& a : agencies_) {
    by_id_.emplace(a.id, &a);
    if (!a.raw_key.empty()) by_key_.emplace(a.raw_key, &a);
    if (!a.previous_raw_key.empty()) by_key_.emplace(a.previous_raw_key, &a);
    by_kind_[a.kind].push_back(&a);
  }
}

bool AcceptsKey(const Agency& agency, std::string_view z85_key, int64_t now_ms) {
  if (!agency.public_key.empty() && z85_key == agency.public_key) return true;
  return !agency.previous_public_key.empty() && z85_key == agency.previous_public_key &&
         now_ms < agency.previous_valid_until_ms;
}

int64_t NowMillis() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

const Agency* AgencyDirectory::Find(std::string_view id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

const Agency* AgencyDirectory::FindByKey(std::string_view raw_key_32) const {
  auto it = by_key_.find(raw_key_32);
  return it == by_key_.end() ? nullptr : it->second;
}

const std::vector<const Agency*>& AgencyDirectory::OfKind(std::string_view kind) const {
  static const std::vector<const Agency*> kNone;
  auto it = by_kind_.find(kind);
  return it == by_kind_.end() ? kNone : it->second;
}

}  // namespace liaison::broker
