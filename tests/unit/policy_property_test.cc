// Property test: random policy sets and random messages, checked against a
// small reference evaluator written here from the semantics (BRIEF §4,
// docs/policies.md §5-§9), with none of the engine's compiled structures: no
// delivered field is forbidden by either side, and every field's action and
// value are the reference's. The reference combines two actions by what each
// reveals (sets of facets, intersected), not by an order; rules put every
// action on every field type, on both sides.
//
// Seeded and repeatable. LIAISON_PROPERTY_SETS x LIAISON_PROPERTY_MESSAGES
// (default 150 x 20) messages; `make property` runs a million.
#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "policy/engine.h"
#include "testing/fixtures.h"

namespace liaison::policy {
namespace {

using reflection::BaseType;

// ---- The reference evaluator -------------------------------------------

struct RefRule {
  std::string id;
  std::vector<std::string> messages;
  std::vector<std::string> purposes;  // empty: any
  std::optional<bool> minor;
  bool break_glass = false;
  std::vector<std::pair<std::string, std::string>> fields;  // pattern, action text
  std::optional<std::string> others;
};

struct RefFacts {
  std::string type, purpose;
  std::optional<bool> minor;
  bool break_glass = false;
};

bool RefMatches(const RefRule& r, const RefFacts& f) {
  if (std::find(r.messages.begin(), r.messages.end(), f.type) == r.messages.end()) return false;
  if (!r.purposes.empty() && std::find(r.purposes.begin(), r.purposes.end(), f.purpose) == r.purposes.end()) {
    return false;
  }
  if (r.minor && f.minor != r.minor) return false;
  if (r.break_glass && !f.break_glass) return false;
  return true;
}

const RefRule* RefFirst(const std::vector<RefRule>& rules, const RefFacts& f) {
  for (const auto& r : rules) {
    if (RefMatches(r, f)) return &r;
  }
  return nullptr;
}

bool IsText(const reflection::Field& f) {
  auto t = f.type()->base_type();
  return t == BaseType::String || (t == BaseType::Vector && f.type()->element() == BaseType::String);
}
std::string LastName(const std::string& path) { return path.substr(path.rfind('.') + 1); }
bool IsDate(const std::string& path, const reflection::Field& f) {
  const std::string n = LastName(path);
  return f.type()->base_type() == BaseType::String &&
         (n == "date_of_birth" || (n.size() > 5 && n.substr(n.size() - 5) == "_date") ||
          (n.size() > 3 && n.substr(n.size() - 3) == "_at"));
}
// Text that a mask or a pseudonym fits: a string that is not a date.
bool IsPlainText(const std::string& path, const reflection::Field& f) {
  return IsText(f) && !IsDate(path, f);
}
bool InAddress(const std::string& path) {
  return path.find("address.") != std::string::npos || path.rfind("location.", 0) == 0;
}

// The action a rule gives one leaf, by string matching on paths.
std::string RefLeafAction(const RefRule& r, const std::string& path, const reflection::Field& f) {
  std::string chosen;
  int best = -2;
  for (const auto& [pattern, action] : r.fields) {
    int score = -2;
    if (pattern == path) {
      score = 1 << 20;
    } else if (pattern == "*") {
      score = -1;
    } else {
      std::string base = pattern.size() > 2 && pattern.substr(pattern.size() - 2) == ".*"
                             ? pattern.substr(0, pattern.size() - 2)
                             : pattern;
      if (path.rfind(base + ".", 0) == 0) score = static_cast<int>(base.size());
    }
    if (score > best) {
      best = score;
      chosen = action;
    }
  }
  if (best == -2) return r.others.value_or("drop");
  if (chosen == "generalize(county)" || chosen == "generalize(sub_county)") {
    if (!InAddress(path)) return "drop";
    const std::string part = LastName(path);
    if (part == "county" || part == "country") return "allow";
    if (part == "sub_county") return chosen == "generalize(sub_county)" ? "allow" : "drop";
    return "drop";
  }
  if ((chosen == "pseudonymize" || chosen.rfind("mask", 0) == 0) && !IsPlainText(path, f)) return "drop";
  if (chosen == "generalize(year)" && !IsDate(path, f)) return "drop";
  if (chosen == "generalize(age-band)" && LastName(path) != "date_of_birth") return "drop";
  return chosen;
}

// What an action reveals of a value, as named facets.
std::set<std::string> RefReveals(const std::string& a) {
  std::set<std::string> facets;
  auto suffix = [&](int n) {
    facets.insert("length");
    for (int i = 1; i <= n; ++i) facets.insert("last " + std::to_string(i));
  };
  if (a == "allow") {
    facets = {"equality", "year", "age band", "county", "sub-county", "the rest"};
    suffix(64);
  } else if (a == "pseudonymize") {
    facets = {"equality"};
  } else if (a == "generalize(year)") {
    facets = {"year"};
  } else if (a == "generalize(age-band)") {
    facets = {"age band"};
  } else if (a == "generalize(county)") {
    facets = {"county"};
  } else if (a == "generalize(sub_county)") {
    facets = {"county", "sub-county"};
  } else if (a.rfind("mask(last:", 0) == 0) {
    suffix(std::stoi(a.substr(10)));
  }
  return facets;  // drop: nothing
}

// The action revealing exactly what both reveal; drop if no action does.
std::string RefCombine(const std::string& a, const std::string& b) {
  static std::map<std::pair<std::string, std::string>, std::string> memo;
  auto it = memo.find({a, b});
  if (it != memo.end()) return it->second;
  const std::set<std::string> ra = RefReveals(a), rb = RefReveals(b);
  std::set<std::string> both;
  std::set_intersection(ra.begin(), ra.end(), rb.begin(), rb.end(), std::inserter(both, both.end()));
  std::vector<std::string> candidates = {"allow", "pseudonymize", "generalize(year)",
                                         "generalize(age-band)", "generalize(county)",
                                         "generalize(sub_county)"};
  for (int n = 1; n <= 64; ++n) candidates.push_back("mask(last:" + std::to_string(n) + ")");
  std::string result = "drop";
  for (const auto& c : candidates) {
    if (RefReveals(c) == both) result = c;
  }
  memo[{a, b}] = result;
  return result;
}

std::string RefMask(const std::string& v, int n) {
  std::vector<std::string> chars;
  for (size_t i = 0; i < v.size();) {
    size_t len = 1;
    while (i + len < v.size() && (static_cast<unsigned char>(v[i + len]) & 0xc0) == 0x80) ++len;
    chars.push_back(v.substr(i, len));
    i += len;
  }
  // At most half of the characters, never all of them.
  const size_t shown = std::min<size_t>(n, chars.size() / 2);
  std::string out;
  for (size_t i = 0; i < chars.size(); ++i) out += i + shown < chars.size() ? "*" : chars[i];
  return out;
}

bool RefDate(const std::string& v, int* y, int* m, int* d) {
  if (v.size() < 10 || v[4] != '-' || v[7] != '-') return false;
  for (int i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (!std::isdigit(static_cast<unsigned char>(v[i]))) return false;
  }
  *y = std::stoi(v.substr(0, 4));
  *m = std::stoi(v.substr(5, 2));
  *d = std::stoi(v.substr(8, 2));
  return *m >= 1 && *m <= 12 && *d >= 1 && *d <= 31;
}

// A message's created_at and the UTC date it falls on (worked out by hand).
struct MessageTime {
  std::string created_at;
  int year, month, day;
};
const std::vector<MessageTime> kTimes = {
    {"2026-11-24T09:30:00Z", 2026, 11, 24},       {"2026-11-25T01:00:00+03:00", 2026, 11, 24},
    {"2026-11-25T03:00:00+03:00", 2026, 11, 25},  {"2026-11-24T19:00:00-05:00", 2026, 11, 25},
    {"2026-11-24T18:59:59-05:00", 2026, 11, 24},  {"2026-11-25T13:59:59+14:00", 2026, 11, 24},
    {"2026-11-25T14:00:00+14:00", 2026, 11, 25},  {"2026-11-24T23:59:59.999Z", 2026, 11, 24},
    {"2027-01-01T02:00:00+03:00", 2026, 12, 31}};

// Age in whole years on the message's UTC date; -1 if the date of birth is unreadable.
int RefAge(const std::string& dob, const MessageTime& at) {
  int y, m, d;
  if (!RefDate(dob, &y, &m, &d)) return -1;
  return at.year - y - ((at.month < m || (at.month == m && at.day < d)) ? 1 : 0);
}

// Only white space (the kinds the generator writes).
bool RefBlank(const std::string& v) {
  std::string rest = v;
  for (const char* space : {" ", "\t", "\n", "\u00a0", "\u3000", "\u200b"}) {
    for (size_t p; (p = rest.find(space)) != std::string::npos;) rest.erase(p, std::strlen(space));
  }
  return rest.empty();
}

// Characters other than white space (ASCII and the generator's Unicode ones count as one).
size_t RefVisible(const std::string& v) {
  size_t n = 0;
  for (size_t i = 0; i < v.size();) {
    size_t len = 1;
    while (i + len < v.size() && (static_cast<unsigned char>(v[i + len]) & 0xc0) == 0x80) ++len;
    n += !RefBlank(v.substr(i, len));
    i += len;
  }
  return n;
}

std::string RefHmacHex(const std::array<uint8_t, 32>& key, const std::string& path, const std::string& v) {
  std::string input = path + std::string(1, '\0') + v;
  unsigned char out[32];
  unsigned int len;
  HMAC(EVP_sha256(), key.data(), 32, reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), out, &len);
  std::ostringstream hex;
  for (int i = 0; i < 16; ++i) hex << std::hex << (out[i] >> 4) << (out[i] & 0xf);
  return hex.str();
}

// What a value becomes under an action; nullopt if the field is dropped.
std::optional<std::string> RefTransform(const std::string& action, const std::string& path,
                                        const std::string& v, const std::array<uint8_t, 32>& key,
                                        const MessageTime& at) {
  if (action == "allow") return v;
  if (action == "drop") return std::nullopt;
  if (action == "pseudonymize") return RefBlank(v) ? std::nullopt : std::optional(RefHmacHex(key, path, v));
  if (action.rfind("mask(last:", 0) == 0) return RefMask(v, std::stoi(action.substr(10)));
  int y, m, d;
  if (action == "generalize(year)") return RefDate(v, &y, &m, &d) ? std::optional(v.substr(0, 4)) : std::nullopt;
  if (action == "generalize(age-band)") {
    int age = RefAge(v, at);
    if (age < 0) return std::nullopt;
    return std::to_string(age / 5 * 5) + "-" + std::to_string(age / 5 * 5 + 4);
  }
  return std::nullopt;
}

// ---- Reading values back, generically -----------------------------------

// leaf path -> every value in the message, in order, as text.
void Collect(const reflection::Schema& schema, const reflection::Object& object,
             const flatbuffers::Table& table, const std::string& prefix,
             std::map<std::string, std::vector<std::string>>& out) {
  for (const reflection::Field* f : *object.fields()) {
    if (!table.CheckField(f->offset())) continue;
    const std::string path = prefix.empty() ? f->name()->str() : prefix + "." + f->name()->str();
    const BaseType t = f->type()->base_type();
    if (t == BaseType::Obj) {
      Collect(schema, *schema.objects()->Get(f->type()->index()),
              *table.GetPointer<const flatbuffers::Table*>(f->offset()), path, out);
    } else if (t == BaseType::Vector && f->type()->element() == BaseType::Obj) {
      auto* vec = table.GetPointer<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::Table>>*>(f->offset());
      for (auto* e : *vec) Collect(schema, *schema.objects()->Get(f->type()->index()), *e, path, out);
    } else if (t == BaseType::String) {
      out[path].push_back(table.GetPointer<const flatbuffers::String*>(f->offset())->str());
    } else if (t == BaseType::Vector && f->type()->element() == BaseType::String) {
      for (auto* s : *table.GetPointer<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>*>(f->offset())) {
        out[path].push_back(s->str());
      }
    } else if (t == BaseType::Vector) {
      auto* vec = table.GetPointer<const flatbuffers::VectorOfAny*>(f->offset());
      for (flatbuffers::uoffset_t i = 0; i < vec->size(); ++i) {
        out[path].push_back(std::to_string(flatbuffers::GetAnyVectorElemI(vec, f->type()->element(), i)));
      }
    } else {
      out[path].push_back(std::to_string(flatbuffers::GetAnyFieldI(table, *f)));
    }
  }
}
// ---- Random policies and messages ---------------------------------------

const std::vector<std::string> kTypes = {"CaseReferral", "CaseUpdate", "IncidentReport"};
const std::vector<std::string> kPurposes = {"referral-for-services", "case-coordination", "imminent-threat"};

struct Generator {
  std::mt19937_64 rng;
  bool Chance(double p) { return std::uniform_real_distribution<>(0, 1)(rng) < p; }
  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }
  template <typename T> const T& PickFrom(const std::vector<T>& v) { return v[Pick(v.size())]; }

  // Text as JSON string content: empty, blank, short or long, with Unicode.
  std::string Text() {
    static const std::vector<std::string> pieces = {"a", "B", "7", "é", "Ω", "-", "x", "Z", "0", " "};
    static const std::vector<std::string> blanks = {"", " ", "   ", "\\t\\n", "\u00a0", "\u3000\u200b"};
    if (Chance(0.08)) return PickFrom(blanks);
    std::string s;
    for (size_t i = 0, n = 1 + Pick(Chance(0.1) ? 80 : 9); i < n; ++i) s += PickFrom(pieces);
    return s;
  }
  std::string Date(bool birth) {
    if (Chance(0.1)) return Chance(0.5) ? "soon" : "";
    // Birthdays on and around the message dates: the 18th and the band edges.
    if (birth && Chance(0.3)) {
      static const std::vector<std::string> edges = {"2008-11-24", "2008-11-25", "2008-12-31",
                                                     "2009-01-01", "2011-11-24", "2011-11-25",
                                                     "2008-02-29"};
      return PickFrom(edges);
    }
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", 1985 + static_cast<int>(Pick(35)),
                  1 + static_cast<int>(Pick(12)), 1 + static_cast<int>(Pick(28)));
    return buf;
  }

  std::string Value(const reflection::Schema& schema, const reflection::Field& f, const std::string& path) {
    const BaseType t = f.type()->base_type();
    auto scalar = [&](BaseType bt, int index) -> std::string {
      if (bt == BaseType::Bool) return Chance(0.5) ? "true" : "false";
      if (index >= 0) return std::to_string(Pick(schema.enums()->Get(index)->values()->size()));
      return std::to_string(Pick(100000));
    };
    if (t == BaseType::String) {
      return "\"" + (IsDate(path, f) ? Date(LastName(path) == "date_of_birth") : Text()) + "\"";
    }
    if (t == BaseType::Vector) {
      std::string out = "[";
      for (size_t i = 0, n = 1 + Pick(3); i < n; ++i) {
        out += (i ? ", " : "") + (f.type()->element() == BaseType::String
                                      ? "\"" + Text() + "\""
                                      : scalar(f.type()->element(), f.type()->index()));
      }
      return out + "]";
    }
    return scalar(t, f.type()->index());
  }

  std::string Table(const reflection::Schema& schema, const reflection::Object& object,
                    const std::string& prefix) {
    std::string out = "{";
    bool first = true;
    for (const reflection::Field* f : *object.fields()) {
      if (!Chance(0.75)) continue;
      const std::string path = prefix.empty() ? f->name()->str() : prefix + "." + f->name()->str();
      const BaseType t = f->type()->base_type();
      std::string value;
      if (t == BaseType::Obj) {
        value = Table(schema, *schema.objects()->Get(f->type()->index()), path);
      } else if (t == BaseType::Vector && f->type()->element() == BaseType::Obj) {
        value = "[" + Table(schema, *schema.objects()->Get(f->type()->index()), path) + ", " +
                Table(schema, *schema.objects()->Get(f->type()->index()), path) + "]";
      } else {
        value = Value(schema, *f, path);
      }
      out += (first ? "" : ", ") + std::string("\"") + f->name()->str() + "\": " + value;
      first = false;
    }
    return out + "}";
  }

  std::string Message(std::string* type, const MessageTime& at) {
    *type = PickFrom(kTypes);
    const reflection::Schema& schema = wire::EnvelopeSchema();
    const auto* object = schema.objects()->LookupByKey(("liaison.wire." + *type).c_str());
    // Justifications: blank, too short, just long enough, long.
    static const std::vector<std::string> justifications = {
        "", "          ", "\\t \\n \u00a0 \u3000", "justified", "t h r e a t s", "0123456789",
        "threat to life: an attack is planned"};
    return std::string("{\"id\": \"m\", \"purpose\": \"") + PickFrom(kPurposes) +
           "\", \"created_at\": \"" + at.created_at + "\"" +
           (Chance(0.4) ? ", \"break_glass\": \"" + PickFrom(justifications) + "\"" : "") +
           ", \"payload_type\": \"" + *type + "\", \"payload\": " + Table(schema, *object, "") + "}";
  }

  // A single-field line whose action does not fit the field's type, for a
  // field of `rule`'s types that the rule does not name yet.
  std::optional<std::pair<std::string, std::string>> Misfit(const RefRule& rule) {
    const std::string t = PickFrom(rule.messages);
    const PayloadLayout* layout = SchemaLayout::Get().For(SchemaLayout::Get().TypeByName(t));
    const Leaf& leaf = layout->leaves[Pick(layout->leaves.size())];
    for (const auto& [pattern, action] : rule.fields) {
      if (pattern == leaf.path) return std::nullopt;
    }
    std::vector<std::string> misfits;
    if (!IsPlainText(leaf.path, *leaf.field)) misfits.insert(misfits.end(), {"pseudonymize", "mask(last:3)"});
    if (!IsDate(leaf.path, *leaf.field)) misfits.push_back("generalize(year)");
    if (LastName(leaf.path) != "date_of_birth") misfits.push_back("generalize(age-band)");
    return std::pair{leaf.path, PickFrom(misfits)};
  }

  // A random valid rule over a random subset of the types.
  RefRule Rule(const std::string& id) {
    RefRule r;
    r.id = id;
    for (const auto& t : kTypes) {
      if (Chance(0.6)) r.messages.push_back(t);
    }
    if (r.messages.empty()) r.messages.push_back(PickFrom(kTypes));
    if (Chance(0.3)) r.purposes = {PickFrom(kPurposes)};
    if (Chance(0.2)) r.minor = Chance(0.5);
    r.break_glass = Chance(0.15);
    if (Chance(0.5)) r.others = Chance(0.5) ? "allow" : "drop";
    // Candidate patterns from the rule's types.
    std::vector<std::pair<std::string, const Leaf*>> leaves;
    std::vector<std::pair<std::string, const Node*>> nodes;
    for (const auto& t : r.messages) {
      const PayloadLayout* layout = SchemaLayout::Get().For(SchemaLayout::Get().TypeByName(t));
      for (const auto& l : layout->leaves) leaves.push_back({l.path, &l});
      for (const auto& n : layout->nodes) {
        if (!n.path.empty()) nodes.push_back({n.path, &n});
      }
    }
    const std::vector<std::string> any_actions = {"allow", "drop", "pseudonymize", "mask(last:N)",
                                                  "generalize(year)", "generalize(age-band)"};
    std::set<std::string> used;
    for (size_t i = 0, n = Pick(10); i < n; ++i) {
      std::string pattern, action;
      const int form = static_cast<int>(Pick(4));
      if (form == 0) {
        pattern = "*";
        action = PickFrom(any_actions);
      } else if (form == 1) {
        // One field: an action that fits its type (docs/policies.md §7).
        const auto& [path, leaf] = PickFrom(leaves);
        pattern = path;
        std::vector<std::string> ok = {"allow", "drop"};
        if (IsPlainText(path, *leaf->field)) ok.insert(ok.end(), {"pseudonymize", "mask(last:N)"});
        if (IsDate(path, *leaf->field)) ok.push_back("generalize(year)");
        if (LastName(path) == "date_of_birth") ok.push_back("generalize(age-band)");
        action = PickFrom(ok);
      } else {
        // A group: any action, on whatever field types lie under it.
        const auto& [path, node] = PickFrom(nodes);
        pattern = form == 2 ? path : path + ".*";
        action = PickFrom(any_actions);
        if (node->is_address && form == 2 && Chance(0.5)) {
          action = Chance(0.5) ? "generalize(county)" : "generalize(sub_county)";
        }
      }
      if (action == "mask(last:N)") {
        static const std::vector<int> lengths = {1, 2, 3, 5, 8, 64};
        action = "mask(last:" + std::to_string(PickFrom(lengths)) + ")";
      }
      const std::string base = pattern.size() > 2 && pattern.substr(pattern.size() - 2) == ".*"
                                   ? pattern.substr(0, pattern.size() - 2) : pattern;
      if (!used.insert(base).second) continue;  // one entry per path
      r.fields.push_back({pattern, action});
    }
    return r;
  }
};

std::string Yaml(const std::string& side, const std::vector<RefRule>& rules) {
  std::string y = side + ":\n";
  for (const auto& r : rules) {
    y += "  - id: " + r.id + "\n    messages: [";
    for (size_t i = 0; i < r.messages.size(); ++i) y += (i ? ", " : "") + r.messages[i];
    y += "]\n";
    if (!r.purposes.empty()) y += "    purposes: [" + r.purposes[0] + "]\n";
    if (r.minor) y += std::string("    subject_minor: ") + (*r.minor ? "true" : "false") + "\n";
    if (r.break_glass) y += "    break_glass: true\n";
    y += "    fields:\n";
    for (const auto& [p, a] : r.fields) y += "      \"" + p + "\": " + a + "\n";
    if (r.others) y += "      others: " + *r.others + "\n";
    if (r.fields.empty() && !r.others) y += "      others: drop\n";
  }
  return y;
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

TEST(PolicyPropertyTest, EngineAgreesWithTheReferenceEvaluator) {
  const int sets = EnvInt("LIAISON_PROPERTY_SETS", 150);
  const int messages = EnvInt("LIAISON_PROPERTY_MESSAGES", 20);
  const uint64_t seed = static_cast<uint64_t>(EnvInt("LIAISON_PROPERTY_SEED", 20261124));
  Generator gen{std::mt19937_64(seed)};
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  const reflection::Schema& schema = wire::EnvelopeSchema();
  size_t checked = 0, released = 0;
  for (int s = 0; s < sets; ++s) {
    std::vector<RefRule> release, accept;
    for (size_t i = 0, n = 1 + gen.Pick(3); i < n; ++i) release.push_back(gen.Rule("r" + std::to_string(i)));
    for (size_t i = 0, n = 1 + gen.Pick(3); i < n; ++i) accept.push_back(gen.Rule("a" + std::to_string(i)));
    testing::TempDir dir;
    auto a = testing::MakeAgency("sender", "exit-programme", "mombasa");
    auto b = testing::MakeAgency("receiver", "youth-welfare", "mombasa");
    // Now and then one line puts an action on a field it does not fit: the
    // whole set must be refused, naming that field.
    if (gen.Chance(0.1)) {
      RefRule& rule = gen.Chance(0.5) ? release[gen.Pick(release.size())] : accept[gen.Pick(accept.size())];
      if (auto misfit = gen.Misfit(rule)) {
        rule.fields.push_back(*misfit);
        a.rules = Yaml("release", release);
        b.rules = Yaml("accept", accept);
        testing::WritePolicies(dir.path().string(), {a, b});
        auto refused = PolicySet::Load(dir.path().string(), "secret");
        ASSERT_FALSE(refused.ok()) << misfit->first << ": " << misfit->second;
        EXPECT_NE(std::string::npos,
                  refused.status().message().find(misfit->second + " does not fit '" + misfit->first + "'"))
            << refused.status().message();
        rule.fields.pop_back();
      }
    }
    a.rules = Yaml("release", release);
    b.rules = Yaml("accept", accept);
    testing::WritePolicies(dir.path().string(), {a, b});
    auto set = PolicySet::Load(dir.path().string(), "secret");
    ASSERT_TRUE(set.ok()) << "set " << s << ":\n" << set.status().message() << "\n" << a.rules << b.rules;
    const auto& sender = (*set)->For(*(*set)->directory().Find("sender"));
    const auto& receiver = (*set)->For(*(*set)->directory().Find("receiver"));

    for (int m = 0; m < messages; ++m) {
      std::string type;
      const MessageTime& at = gen.PickFrom(kTimes);
      const std::string json = gen.Message(&type, at);
      auto bytes = codec.ToBinary(json, "random");
      ASSERT_TRUE(bytes.ok()) << bytes.status().message() << "\n" << json;
      const wire::Envelope* env = wire::VerifyEnvelope(*bytes);
      const std::string context = "seed " + std::to_string(seed) + " set " + std::to_string(s) +
                                  " message " + std::to_string(m) + "\n" + a.rules + b.rules + json;

      std::map<std::string, std::vector<std::string>> in;
      Collect(schema, *schema.objects()->LookupByKey(("liaison.wire." + type).c_str()),
              *static_cast<const flatbuffers::Table*>(env->payload()), "", in);
      RefFacts facts{type, env->purpose()->str(), std::nullopt,
                     env->break_glass() && RefVisible(env->break_glass()->str()) >= 10};
      if (type == "CaseReferral" && in.count("subject.date_of_birth")) {
        int age = RefAge(in["subject.date_of_birth"][0], at);
        if (age >= 0) facts.minor = age < 18;
      }
      const RefRule* ref_release = RefFirst(release, facts);
      const RefRule* ref_accept = ref_release ? RefFirst(accept, facts) : nullptr;

      const MessageFacts engine_facts = ExtractFacts(*env, (*set)->vocabulary());
      const Decision d = Decide(sender, receiver, engine_facts);
      ASSERT_EQ(ref_release && ref_accept, d.allowed()) << context;
      ++checked;
      if (!d.allowed()) continue;
      ++released;
      ASSERT_EQ(ref_release->id, d.release->id) << context;
      ASSERT_EQ(ref_accept->id, d.accept->id) << context;

      const PayloadLayout& layout = *SchemaLayout::Get().For(engine_facts.type);
      std::array<Action, kMaxLeaves> actions;
      CombinePlans(d, engine_facts.type, actions.data());
      flatbuffers::FlatBufferBuilder fbb;
      ASSERT_TRUE(Rewrite(*env, "sender", "receiver", actions.data(), receiver.pseudonym_key,
                          engine_facts, fbb, nullptr).ok());
      const wire::Envelope* out_env = wire::VerifyEnvelope({fbb.GetBufferPointer(), fbb.GetSize()});
      ASSERT_NE(nullptr, out_env) << context;
      std::map<std::string, std::vector<std::string>> out;
      Collect(schema, *schema.objects()->LookupByKey(("liaison.wire." + type).c_str()),
              *static_cast<const flatbuffers::Table*>(out_env->payload()), "", out);

      for (size_t i = 0; i < layout.leaves.size(); ++i) {
        const Leaf& leaf = layout.leaves[i];
        const std::string expected = RefCombine(RefLeafAction(*ref_release, leaf.path, *leaf.field),
                                                RefLeafAction(*ref_accept, leaf.path, *leaf.field));
        ASSERT_EQ(expected, ActionText(actions[i])) << leaf.path << "\n" << context;
        std::vector<std::string> want;
        for (const auto& v : in[leaf.path]) {
          const bool scalar = leaf.kind == LeafKind::kScalar || leaf.kind == LeafKind::kScalarVector;
          auto t = scalar ? (expected == "drop" ? std::nullopt : std::optional(v))
                          : RefTransform(expected, leaf.path, v, receiver.pseudonym_key, at);
          if (t) want.push_back(*t);
        }
        ASSERT_EQ(want, out[leaf.path]) << leaf.path << " under " << expected << "\n" << context;
      }
    }
  }
  std::printf("checked %zu messages, %zu released, %d policy sets\n", checked, released, sets);
  EXPECT_GT(released, checked / 20);  // the generator must exercise the release path
}

}  // namespace
}  // namespace liaison::policy
