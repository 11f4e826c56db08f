#include "policy/policy_set.h"

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/sha.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "liaison/keys.h"
#include "liaison/yaml_util.h"

namespace liaison::policy {
namespace {

namespace fs = std::filesystem;
using broker::Agency;

const std::vector<std::string> kRuleKeys = {
    "id",       "description", "to",           "from",       "messages",
    "purposes", "legal_bases", "consent",      "handling",   "subject_minor",
    "risk_levels", "break_glass", "fields", "onward"};
const std::vector<std::string> kCounterpartKeys = {"agencies", "kinds", "regions"};
const std::vector<std::string> kOnwardKeys = {"agencies", "kinds"};

// The names of an enum's values, from the generated code, by value.
template <typename E>
std::vector<std::string> EnumNames(const char* const* names, E max) {
  std::vector<std::string> out;
  for (int i = 0; i <= static_cast<int>(max); ++i) out.push_back(names[i]);
  return out;
}

// Vocabulary section -> its ids.
std::vector<std::string> ReadSection(const YAML::Node& root, const char* name, YamlReader& r) {
  std::vector<std::string> ids;
  const YAML::Node node = root[name];
  if (!node || !node.IsMap()) {
    r.Error(node ? node : root, name, "expected a map of ids to descriptions");
    return ids;
  }
  for (const auto& entry : node) ids.push_back(entry.first.Scalar());
  return ids;
}

// vocabulary.yaml's optional judicial_purposes: [purpose, ...] and
// compatible_purposes: {purpose: [purpose, ...]}; every id must be one of
// `purposes`.
void ReadPurposeMarks(const YAML::Node& root, YamlReader& r, Vocabulary* v) {
  auto check = [&](const YAML::Node& node, const std::string& path) -> std::optional<std::string> {
    if (!node.IsScalar()) {
      r.Error(node, path, "expected a purpose id");
      return std::nullopt;
    }
    if (Vocabulary::IndexOf(v->purposes, node.Scalar()) < 0) {
      r.Error(node, path, "'" + node.Scalar() + "' is not a purpose of this file's 'purposes'");
      return std::nullopt;
    }
    return node.Scalar();
  };
  if (const YAML::Node judicial = root["judicial_purposes"]; judicial) {
    if (!judicial.IsSequence()) {
      r.Error(judicial, "judicial_purposes", "expected a list of purpose ids, e.g. [judicial-proceedings]");
    } else {
      for (const auto& item : judicial) {
        if (auto id = check(item, "judicial_purposes")) v->judicial_purposes.push_back(*id);
      }
    }
  }
  if (const YAML::Node compatible = root["compatible_purposes"]; compatible) {
    if (!compatible.IsMap()) {
      r.Error(compatible, "compatible_purposes",
              "expected a map of a purpose id to the list of purposes compatible with it");
      return;
    }
    for (const auto& entry : compatible) {
      auto purpose = check(entry.first, "compatible_purposes");
      const std::string path = "compatible_purposes." + entry.first.Scalar();
      if (!entry.second.IsSequence()) {
        r.Error(entry.second, path, "expected a list of purpose ids");
        continue;
      }
      std::vector<std::string> others;
      for (const auto& item : entry.second) {
        if (auto id = check(item, path)) others.push_back(*id);
      }
      if (purpose) v->compatible_purposes[*purpose] = std::move(others);
    }
  }
}

// vocabulary.yaml's optional response_deadlines: {red: 4h, amber: 24h,
// green: 72h}; an urgency it leaves out keeps its default.
void ReadResponseDeadlines(const YAML::Node& root, YamlReader& r, ResponseDeadlines* out) {
  const YAML::Node node = root["response_deadlines"];
  if (!node) return;
  // An unknown key is reported, and the known ones are still checked.
  r.ExpectMap(node, "response_deadlines", {"red", "amber", "green"});
  if (!node.IsMap()) return;
  const std::pair<const char*, size_t> urgencies[] = {{"red", 1}, {"amber", 2}, {"green", 3}};
  for (const auto& [name, index] : urgencies) {
    const YAML::Node value = node[name];
    if (!value) continue;
    const std::string path = std::string("response_deadlines.") + name;
    const std::optional<int64_t> ms = value.IsScalar() ? ParseDeadline(value.Scalar()) : std::nullopt;
    if (!ms) {
      r.Error(value, path,
              "not a duration; write a whole number and a unit: s, m, h or d (e.g. 4h, 90m; at most 365d)");
      continue;
    }
    (*out)[index] = *ms;
  }
}

std::string Hint(const std::string& value, const std::vector<std::string>& known) {
  std::string near = NearestName(value, known);
  return near.empty() ? "" : "; did you mean '" + near + "'?";
}

// Reads a list of words that must each be in `known`.
bool ReadTerms(YamlReader& r, const YAML::Node& map, const std::string& path, const char* key,
               const std::vector<std::string>& known, const char* what,
               std::vector<std::string>* out) {
  std::vector<std::string> values;
  if (!r.ReadStringList(map, path, key, &values)) return false;
  bool good = true;
  const YAML::Node list = map[key];
  for (size_t i = 0; i < values.size(); ++i) {
    if (Vocabulary::IndexOf(known, values[i]) < 0) {
      r.Error(list[i], path + "." + key,
              "unknown " + std::string(what) + " '" + values[i] + "'" + Hint(values[i], known));
      good = false;
    }
  }
  if (list && values.empty() && good) {
    r.Error(list, path + "." + key, "an empty list matches nothing; leave the key out to match any");
    good = false;
  }
  *out = std::move(values);
  return good;
}

uint32_t MaskOf(const std::vector<std::string>& values, const std::vector<std::string>& names) {
  if (values.empty()) return ~0u;
  uint32_t mask = 0;
  for (const auto& v : values) {
    int i = Vocabulary::IndexOf(names, v);
    if (i >= 0) mask |= 1u << i;
  }
  return mask;
}

bool HasPrefixPath(std::string_view path, std::string_view prefix) {
  return path.size() > prefix.size() && path.substr(0, prefix.size()) == prefix &&
         path[prefix.size()] == '.';
}

// Whether `action` fits `leaf`'s type (docs/policies.md section 7): masks
// and pseudonyms fit text, not dates (a mask would show a date's day and
// month, which generalize(year) hides); date actions fit dates only.
bool Applies(Action action, const Leaf& leaf) {
  const bool text = (leaf.kind == LeafKind::kString || leaf.kind == LeafKind::kStringVector) &&
                    !leaf.is_date;
  switch (action.kind) {
    case ActionKind::kAllow:
    case ActionKind::kDrop:
      return true;
    case ActionKind::kMask:
    case ActionKind::kPseudonymize:
      return text;
    case ActionKind::kGeneralizeYear:
      return leaf.is_date;
    case ActionKind::kGeneralizeAgeBand:
      return leaf.is_birth_date;
    case ActionKind::kGeneralizeCounty:
    case ActionKind::kGeneralizeSubCounty:
      return false;  // applies to address tables, resolved per part
  }
  return false;
}

// "a date of birth", "a text field", ...: the type of `leaf` as §7 names it.
std::string FieldTypeName(const Leaf& leaf) {
  if (leaf.is_birth_date) return "a date of birth";
  if (leaf.is_date) return "a date";
  if (leaf.kind == LeafKind::kString) return "a text field";
  if (leaf.kind == LeafKind::kStringVector) return "a list of texts";
  if (leaf.kind == LeafKind::kScalarVector) return "a list of codes";
  return "a code, yes/no or number";
}

// The hint for an action that does not fit `leaf`: what does.
std::string FittingActions(const Leaf& leaf) {
  std::string out = "allow, drop";
  if (Applies(Action{ActionKind::kPseudonymize}, leaf)) out += ", pseudonymize, mask(last:N)";
  if (leaf.is_date) out += ", generalize(year)";
  if (leaf.is_birth_date) out += ", generalize(age-band)";
  return out;
}

// An address generalisation seen from one of the address's parts: the part
// is kept if it is at or above the level.
Action AddressPartAction(ActionKind level, int part) {
  const int keep_from = level == ActionKind::kGeneralizeCounty ? 3 : 2;  // kAddressParts
  return Action{part >= keep_from ? ActionKind::kAllow : ActionKind::kDrop, 0};
}

// Compiles `rule`'s entries into one decision per leaf of `layout`.
std::vector<LeafDecision> CompilePlan(const Rule& rule, const PayloadLayout& layout) {
  std::vector<LeafDecision> plan(layout.leaves.size());
  for (size_t l = 0; l < layout.leaves.size(); ++l) {
    const Leaf& leaf = layout.leaves[l];
    int best = -1;
    size_t best_specificity = 0;
    for (size_t e = 0; e < rule.entries.size(); ++e) {
      const std::string& p = rule.entries[e].pattern;
      size_t specificity = 0;
      if (p == leaf.path) {
        specificity = SIZE_MAX;
      } else if (p == "*") {
        specificity = 1;
      } else if (p.size() > 2 && p.compare(p.size() - 2, 2, ".*") == 0 &&
                 HasPrefixPath(leaf.path, std::string_view(p).substr(0, p.size() - 2))) {
        specificity = p.size();  // "a.b.*" and "a.b" are equally specific
      } else if (HasPrefixPath(leaf.path, p)) {
        specificity = p.size() + 2;
      }
      if (specificity > best_specificity) {
        best_specificity = specificity;
        best = static_cast<int>(e);
      }
    }
    LeafDecision& d = plan[l];
    if (best < 0) {
      d = rule.others ? LeafDecision{*rule.others, LeafDecision::kOthers}
                      : LeafDecision{Action{}, LeafDecision::kUnnamed};
      if (!Applies(d.action, leaf)) d.action = Action{};
      continue;
    }
    d.entry = static_cast<int16_t>(best);
    const Action a = rule.entries[best].action;
    if (a.kind == ActionKind::kGeneralizeCounty || a.kind == ActionKind::kGeneralizeSubCounty) {
      d.action = leaf.address_part >= 0 ? AddressPartAction(a.kind, leaf.address_part) : Action{};
    } else if (Applies(a, leaf)) {
      d.action = a;
    } else {
      d.action = Action{};  // fail closed: a transformation that cannot apply drops
      d.inapplicable = true;
    }
  }
  return plan;
}

// Looks `path` up in the layouts of `types`: the node or leaf it names.
struct PathTarget {
  const Leaf* leaf = nullptr;
  const Node* node = nullptr;
};
PathTarget FindPath(const std::string& path, uint32_t types) {
  PathTarget t;
  for (size_t tag = 1; tag < kPayloadTypes; ++tag) {
    if (!(types & (1u << tag))) continue;
    const PayloadLayout* layout = SchemaLayout::Get().For(static_cast<wire::Payload>(tag));
    for (const Leaf& leaf : layout->leaves) {
      if (leaf.path == path && !t.leaf) t.leaf = &leaf;
    }
    for (const Node& node : layout->nodes) {
      if (!node.path.empty() && node.path == path && !t.node) t.node = &node;
    }
  }
  return t;
}

std::vector<std::string> KnownPaths(uint32_t types) {
  std::set<std::string> paths;
  for (size_t tag = 1; tag < kPayloadTypes; ++tag) {
    if (!(types & (1u << tag))) continue;
    const PayloadLayout* layout = SchemaLayout::Get().For(static_cast<wire::Payload>(tag));
    for (const Leaf& leaf : layout->leaves) paths.insert(leaf.path);
    for (const Node& node : layout->nodes) {
      if (!node.path.empty()) paths.insert(node.path);
    }
  }
  return {paths.begin(), paths.end()};
}

std::string TypeList(uint32_t types) {
  std::string out;
  for (size_t tag = 1; tag < kPayloadTypes; ++tag) {
    if (types & (1u << tag)) {
      out += (out.empty() ? "" : ", ") +
             std::string(wire::EnumNamePayload(static_cast<wire::Payload>(tag)));
    }
  }
  return out;
}

// Reads and checks a rule's fields map.
void ReadFields(YamlReader& r, const YAML::Node& rule_node, const std::string& path, Rule& rule) {
  const YAML::Node fields = rule_node["fields"];
  if (!fields) {
    r.Error(rule_node, path, "missing 'fields': name what this rule lets through (or 'others: drop')");
    return;
  }
  if (!fields.IsMap()) {
    r.Error(fields, path + ".fields", "expected a map of field path: action");
    return;
  }
  const std::vector<std::string> known = KnownPaths(rule.messages);
  std::set<std::string> seen;
  for (const auto& entry : fields) {
    const std::string key = entry.first.Scalar();
    const std::string where = path + ".fields." + key;
    if (!entry.second.IsScalar()) {
      r.Error(entry.second, where, "expected an action: allow, drop, pseudonymize, "
                                   "generalize(year|age-band|county|sub_county) or mask(last:N)");
      continue;
    }
    std::optional<Action> action = ParseAction(entry.second.Scalar());
    if (!action) {
      const std::vector<std::string> actions = {"allow", "drop", "pseudonymize",
                                                "generalize(year)", "generalize(age-band)",
                                                "generalize(county)", "generalize(sub_county)",
                                                "mask(last:4)"};
      r.Error(entry.second, where,
              "unknown action '" + entry.second.Scalar() + "'" +
                  Hint(entry.second.Scalar(), actions) +
                  " (use allow, drop, pseudonymize, generalize(year|age-band|county|sub_county) "
                  "or mask(last:N))");
      continue;
    }
    if (!seen.insert(key).second) {
      r.Error(entry.first, where, "named twice in this rule");
      continue;
    }
    if (key == "others") {
      if (action->kind != ActionKind::kAllow && action->kind != ActionKind::kDrop) {
        r.Error(entry.second, where, "others can only be allow or drop");
        continue;
      }
      rule.others = action;
      rule.others_line = entry.first.Mark().line + 1;
      continue;
    }
    const bool wildcard = key == "*";
    const bool prefix = key.size() > 2 && key.compare(key.size() - 2, 2, ".*") == 0;
    const std::string target_path = prefix ? key.substr(0, key.size() - 2) : key;
    PathTarget target = wildcard ? PathTarget{} : FindPath(target_path, rule.messages);
    if (!wildcard && !target.leaf && !target.node) {
      r.Error(entry.first, where,
              target_path.rfind("header", 0) == 0
                  ? "no header field '" + target_path + "' that rules name" +
                        Hint(target_path, known) +
                        " (rules name only the header's free text: header.consent.scope, "
                        "header.handling_restrictions, header.break_glass; the other header "
                        "fields pass unchanged)"
                  : "no field '" + target_path + "' in " + TypeList(rule.messages) +
                        Hint(target_path, known));
      continue;
    }
    if (prefix && !target.node) {
      r.Error(entry.first, where, "'" + target_path + "' is a single field; write it without .*");
      continue;
    }
    const bool address_level = action->kind == ActionKind::kGeneralizeCounty ||
                               action->kind == ActionKind::kGeneralizeSubCounty;
    if (address_level && !(target.node && target.node->is_address && !prefix)) {
      r.Error(entry.second, where,
              ActionText(*action) + " applies to an address (e.g. subject.address, location)");
      continue;
    }
    if (target.leaf && !address_level && !Applies(*action, *target.leaf)) {
      r.Error(entry.second, where,
              ActionText(*action) + " does not fit '" + target_path + "', which is " +
                  FieldTypeName(*target.leaf) + "; use " + FittingActions(*target.leaf) +
                  " (docs/policies.md section 7)");
      continue;
    }
    rule.entries.push_back({key, *action, entry.first.Mark().line + 1});
  }
}

struct AgencyFileContext {
  const Vocabulary& vocabulary;
  const broker::AgencyDirectory& directory;
  std::vector<std::string> agency_ids;
};

void ReadCounterpart(YamlReader& r, const YAML::Node& node, const std::string& path,
                     const AgencyFileContext& ctx, Rule& rule) {
  if (!node) return;  // any counterpart
  if (!r.ExpectMap(node, path, kCounterpartKeys)) return;
  ReadTerms(r, node, path, "agencies", ctx.agency_ids, "agency", &rule.agencies);
  ReadTerms(r, node, path, "kinds", ctx.vocabulary.kinds, "agency kind", &rule.kinds);
  ReadTerms(r, node, path, "regions", ctx.vocabulary.regions, "region", &rule.regions);
}

Rule ReadRule(YamlReader& r, const YAML::Node& node, const std::string& path, bool release,
              const AgencyFileContext& ctx) {
  Rule rule;
  rule.release = release;
  rule.source = YamlWhere(r.file(), node);
  rule.file = r.file();
  if (!r.ExpectMap(node, path, kRuleKeys)) return rule;
  r.ReadString(node, path, "id", &rule.id, true);
  r.ReadString(node, path, "description", &rule.description);
  const char* counterpart = release ? "to" : "from";
  if (node[release ? "from" : "to"]) {
    r.Error(node[release ? "from" : "to"], path,
            std::string(release ? "a release rule names its recipients under 'to'"
                                : "an accept rule names its senders under 'from'"));
  }
  ReadCounterpart(r, node[counterpart], path + "." + counterpart, ctx, rule);
  if (const YAML::Node onward = node["onward"]; onward) {
    if (!release) {
      r.Error(onward, path, "'onward' belongs in a release rule: it is what the sender allows its recipients to "
                            "pass on (docs/policies.md, \"Handling codes\")");
    } else if (r.ExpectMap(onward, path + ".onward", kOnwardKeys)) {
      ReadTerms(r, onward, path + ".onward", "agencies", ctx.agency_ids, "agency", &rule.onward_agencies);
      ReadTerms(r, onward, path + ".onward", "kinds", ctx.vocabulary.kinds, "agency kind", &rule.onward_kinds);
    }
  }

  std::vector<std::string> messages;
  if (!node["messages"]) {
    r.Error(node, path, "missing 'messages': list the message types this rule covers (" +
                            TypeList(~0u) + ")");
  } else if (ReadTerms(r, node, path, "messages", SchemaLayout::Get().type_names(), "message type",
                       &messages)) {
    for (const auto& m : messages) {
      rule.messages |= 1u << static_cast<uint32_t>(SchemaLayout::Get().TypeByName(m));
    }
  }
  std::vector<std::string> purposes, legal_bases, consent, handling, risk;
  ReadTerms(r, node, path, "purposes", ctx.vocabulary.purposes, "purpose", &purposes);
  ReadTerms(r, node, path, "legal_bases", ctx.vocabulary.legal_bases, "legal basis", &legal_bases);
  for (const auto& p : purposes) rule.purposes.push_back(Vocabulary::IndexOf(ctx.vocabulary.purposes, p));
  for (const auto& b : legal_bases) {
    rule.legal_bases.push_back(Vocabulary::IndexOf(ctx.vocabulary.legal_bases, b));
  }
  const auto consent_names = EnumNames(wire::EnumNamesConsentStatus(), wire::ConsentStatus::MAX);
  const auto handling_names = EnumNames(wire::EnumNamesHandling(), wire::Handling::MAX);
  const auto risk_names = EnumNames(wire::EnumNamesRiskLevel(), wire::RiskLevel::MAX);
  ReadTerms(r, node, path, "consent", consent_names, "consent status", &consent);
  ReadTerms(r, node, path, "handling", handling_names, "handling code", &handling);
  ReadTerms(r, node, path, "risk_levels", risk_names, "risk level", &risk);
  rule.consent = MaskOf(consent, consent_names);
  rule.handling = MaskOf(handling, handling_names);
  rule.risk = MaskOf(risk, risk_names);
  std::string minor, break_glass;
  if (r.ReadChoice(node, path, "subject_minor", {"true", "false"}, &minor) && !minor.empty()) {
    rule.subject_minor = minor == "true";
  }
  if (r.ReadChoice(node, path, "break_glass", {"true", "false"}, &break_glass)) {
    rule.break_glass = break_glass == "true";
  }
  if (rule.messages != 0) ReadFields(r, node, path, rule);
  for (size_t tag = 1; tag < kPayloadTypes; ++tag) {
    if (rule.messages & (1u << tag)) {
      rule.plans[tag] = CompilePlan(rule, *SchemaLayout::Get().For(static_cast<wire::Payload>(tag)));
    }
  }
  return rule;
}

void ReadRules(YamlReader& r, const YAML::Node& root, const char* key, bool release,
               const AgencyFileContext& ctx, std::set<std::string>& ids, std::vector<Rule>& out) {
  const YAML::Node list = root[key];
  if (!list) return;
  if (!list.IsSequence()) {
    r.Error(list, key, "expected a list of rules (each starting with '- id: ...')");
    return;
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string path = std::string(key) + "[" + std::to_string(i) + "]";
    Rule rule = ReadRule(r, list[i], path, release, ctx);
    if (!rule.id.empty() && !ids.insert(rule.id).second) {
      r.Error(list[i]["id"], path + ".id", "rule id '" + rule.id + "' is used twice in this file");
    }
    out.push_back(std::move(rule));
  }
}

void ReadRetention(YamlReader& r, const YAML::Node& root, Retention& retention) {
  const YAML::Node node = root["retention"];
  if (!node || !r.ExpectMap(node, "retention", {"undelivered_days", "delivered_days"})) return;
  uint64_t undelivered = retention.undelivered_days, delivered = retention.delivered_days;
  r.ReadUint(node, "retention", "undelivered_days", 1, 3650, &undelivered);
  r.ReadUint(node, "retention", "delivered_days", 1, 36500, &delivered);
  retention.undelivered_days = static_cast<uint32_t>(undelivered);
  retention.delivered_days = static_cast<uint32_t>(delivered);
}

std::string HashFiles(const std::vector<fs::path>& files) {
  // name, NUL, size, body for each file: no two different sets hash alike.
  std::string all;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    const std::string body = text.str();
    all += file.filename().string();
    all.push_back('\0');
    all += std::to_string(body.size()) + ":" + body;
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(all.data()), all.size(), digest);
  return HexEncode(digest, 8);
}

}  // namespace

namespace {

// What an action lets the recipient learn of a value, as a set of facets.
// Combining two actions intersects their sets; the result is the action
// whose set is exactly the intersection. A mask's suffix length is not a
// facet: two masks intersect to the shorter one (CombineActions).
enum Facet : uint8_t {
  kEquality = 1 << 0,   // which values are equal (a pseudonym shows only this)
  kYear = 1 << 1,       // a date's year
  kAgeBand = 1 << 2,    // the 5-year age band at the message date
  kLength = 1 << 3,     // the number of characters (a mask shows it)
  kSuffix = 1 << 4,     // the last characters (a mask shows some)
  kCounty = 1 << 5,     // an address down to county
  kSubCounty = 1 << 6,  // ... and its sub-county
  kWhole = 1 << 7,      // the rest of the value: only allow shows it
};

constexpr uint8_t FacetsOf(ActionKind kind) {
  switch (kind) {
    case ActionKind::kAllow: return 0xff;
    case ActionKind::kMask: return kLength | kSuffix;
    case ActionKind::kGeneralizeSubCounty: return kCounty | kSubCounty;
    case ActionKind::kGeneralizeCounty: return kCounty;
    case ActionKind::kGeneralizeYear: return kYear;
    case ActionKind::kGeneralizeAgeBand: return kAgeBand;
    case ActionKind::kPseudonymize: return kEquality;
    case ActionKind::kDrop: return 0;
  }
  return 0;
}

// The action revealing exactly `facets`; drop if none does.
constexpr ActionKind KindRevealing(uint8_t facets) {
  for (size_t k = 0; k < kActionKinds; ++k) {
    if (FacetsOf(static_cast<ActionKind>(k)) == facets) return static_cast<ActionKind>(k);
  }
  return ActionKind::kDrop;
}

using CombinationTable = std::array<std::array<ActionKind, kActionKinds>, kActionKinds>;

constexpr CombinationTable BuildCombinationTable() {
  CombinationTable table{};
  for (size_t a = 0; a < kActionKinds; ++a) {
    for (size_t b = 0; b < kActionKinds; ++b) {
      table[a][b] = KindRevealing(FacetsOf(static_cast<ActionKind>(a)) &
                                  FacetsOf(static_cast<ActionKind>(b)));
    }
  }
  return table;
}

constexpr CombinationTable kCombined = BuildCombinationTable();

static_assert(kCombined[size_t(ActionKind::kMask)][size_t(ActionKind::kGeneralizeYear)] ==
                  ActionKind::kDrop,
              "a mask and a year reveal different parts of a date");
static_assert(kCombined[size_t(ActionKind::kGeneralizeSubCounty)]
                       [size_t(ActionKind::kGeneralizeCounty)] == ActionKind::kGeneralizeCounty,
              "sub-county reveals the county and more");

}  // namespace

Action CombineActions(Action a, Action b) {
  Action out{kCombined[static_cast<size_t>(a.kind)][static_cast<size_t>(b.kind)], 0};
  if (out.kind == ActionKind::kMask) {
    // Only a mask and a mask, or a mask and allow, meet in a mask.
    const int a_last = a.kind == ActionKind::kMask ? a.mask_last : 255;
    const int b_last = b.kind == ActionKind::kMask ? b.mask_last : 255;
    out.mask_last = static_cast<uint8_t>(std::min(a_last, b_last));
  }
  return out;
}

std::string ActionText(Action action) {
  switch (action.kind) {
    case ActionKind::kAllow: return "allow";
    case ActionKind::kMask: return "mask(last:" + std::to_string(action.mask_last) + ")";
    case ActionKind::kGeneralizeSubCounty: return "generalize(sub_county)";
    case ActionKind::kGeneralizeCounty: return "generalize(county)";
    case ActionKind::kGeneralizeYear: return "generalize(year)";
    case ActionKind::kGeneralizeAgeBand: return "generalize(age-band)";
    case ActionKind::kPseudonymize: return "pseudonymize";
    case ActionKind::kDrop: return "drop";
  }
  return "drop";
}

std::optional<Action> ParseAction(std::string_view text) {
  if (text == "allow") return Action{ActionKind::kAllow};
  if (text == "drop") return Action{ActionKind::kDrop};
  if (text == "pseudonymize") return Action{ActionKind::kPseudonymize};
  if (text == "generalize(year)") return Action{ActionKind::kGeneralizeYear};
  if (text == "generalize(age-band)") return Action{ActionKind::kGeneralizeAgeBand};
  if (text == "generalize(county)") return Action{ActionKind::kGeneralizeCounty};
  if (text == "generalize(sub_county)") return Action{ActionKind::kGeneralizeSubCounty};
  constexpr std::string_view kMask = "mask(last:";
  if (text.substr(0, kMask.size()) == kMask && text.size() > kMask.size() + 1 && text.back() == ')') {
    std::string_view digits = text.substr(kMask.size(), text.size() - kMask.size() - 1);
    unsigned n = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec == std::errc() && end == digits.data() + digits.size() && n >= 1 && n <= 64) {
      return Action{ActionKind::kMask, static_cast<uint8_t>(n)};
    }
  }
  return std::nullopt;
}

std::optional<int64_t> ParseDeadline(std::string_view text) {
  if (text.size() < 2) return std::nullopt;
  int64_t unit_ms = 0;
  switch (text.back()) {
    case 's': unit_ms = 1000; break;
    case 'm': unit_ms = 60 * 1000; break;
    case 'h': unit_ms = kHourMs; break;
    case 'd': unit_ms = 24 * kHourMs; break;
    default: return std::nullopt;
  }
  const std::string_view digits = text.substr(0, text.size() - 1);
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size() || n == 0) return std::nullopt;
  // A year bounds it, far below overflow: a longer "deadline" is a typo.
  if (n > static_cast<uint64_t>(365 * 24 * kHourMs / unit_ms)) return std::nullopt;
  return static_cast<int64_t>(n) * unit_ms;
}

int Vocabulary::IndexOf(const std::vector<std::string>& list, std::string_view value) {
  auto it = std::find(list.begin(), list.end(), value);
  return it == list.end() ? -1 : static_cast<int>(it - list.begin());
}

StatusOr<std::shared_ptr<const PolicySet>> PolicySet::Load(const std::string& dir,
                                                           std::string_view pseudonym_secret,
                                                           std::vector<std::string>* warnings) {
  auto directory = broker::AgencyDirectory::Load(dir, warnings);
  // Identity errors first; rules are still checked so that every error shows.
  std::vector<std::string> errors;
  if (!directory.ok()) errors.push_back(directory.status().message());

  const std::string vocabulary_path = (fs::path(dir) / "vocabulary.yaml").string();
  auto vocabulary_doc = LoadYamlFile(vocabulary_path);
  if (!vocabulary_doc.ok()) return vocabulary_doc.status();
  std::shared_ptr<PolicySet> set(new PolicySet());
  {
    YamlReader r(vocabulary_path);
    r.ExpectMap(*vocabulary_doc, "",
                {"kinds", "regions", "purposes", "legal_bases", "handling_codes", "response_deadlines",
                 "judicial_purposes", "compatible_purposes"});
    Vocabulary& v = set->vocabulary_;
    v.kinds = ReadSection(*vocabulary_doc, "kinds", r);
    v.regions = ReadSection(*vocabulary_doc, "regions", r);
    v.purposes = ReadSection(*vocabulary_doc, "purposes", r);
    v.legal_bases = ReadSection(*vocabulary_doc, "legal_bases", r);
    v.handling_codes = ReadSection(*vocabulary_doc, "handling_codes", r);
    ReadResponseDeadlines(*vocabulary_doc, r, &v.response_deadlines);
    ReadPurposeMarks(*vocabulary_doc, r, &v);
    // The directory already reported kinds/regions problems.
    for (const auto& e : r.errors()) {
      if (e.find("'kinds'") == std::string::npos && e.find("'regions'") == std::string::npos) {
        errors.push_back(e);
      }
    }
  }
  if (!directory.ok()) {
    // Rules need the identities; report what we have.
    std::string text;
    for (const auto& e : errors) text += (text.empty() ? "" : "\n") + e;
    return Status::InvalidArgument(text);
  }
  set->directory_ = *directory;

  AgencyFileContext ctx{set->vocabulary_, *set->directory_, {}};
  for (const Agency& a : set->directory_->agencies()) ctx.agency_ids.push_back(a.id);

  std::vector<fs::path> files = {vocabulary_path};
  std::vector<std::string> sources;
  for (const Agency& agency : set->directory_->agencies()) sources.push_back(agency.source);
  ForEachYamlFile(sources, [&](size_t i, StatusOr<YAML::Node>& doc) {
    const Agency& agency = set->directory_->agencies()[i];
    files.push_back(agency.source);
    AgencyPolicy policy;
    policy.agency = &agency;
    policy.pseudonym_key = DeriveKey(pseudonym_secret, "liaison pseudonym v1", agency.id);
    if (!doc.ok()) {
      errors.push_back(doc.status().message());
      return;
    }
    YamlReader r(agency.source);
    std::set<std::string> ids;
    ReadRules(r, *doc, "release", /*release=*/true, ctx, ids, policy.release);
    ReadRules(r, *doc, "accept", /*release=*/false, ctx, ids, policy.accept);
    ReadRetention(r, *doc, policy.retention);
    errors.insert(errors.end(), r.errors().begin(), r.errors().end());
    if (warnings && policy.release.empty() && policy.accept.empty()) {
      warnings->push_back(agency.source + ": agency '" + agency.id +
                          "' has no release or accept rules; every message to or from it is denied");
    }
    set->policies_.push_back(std::move(policy));
  });
  if (!errors.empty()) {
    std::string text;
    for (const auto& e : errors) text += (text.empty() ? "" : "\n") + e;
    return Status::InvalidArgument(text);
  }
  set->version_ = HashFiles(files);
  return std::shared_ptr<const PolicySet>(std::move(set));
}

const AgencyPolicy& PolicySet::For(const Agency& agency) const {
  return policies_[&agency - directory_->agencies().data()];
}

const AgencyPolicy* PolicySet::Find(std::string_view agency_id) const {
  const Agency* a = directory_->Find(agency_id);
  return a ? &For(*a) : nullptr;
}

}  // namespace liaison::policy
