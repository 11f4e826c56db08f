#include "policy/policy_lint.h"

#include <algorithm>

namespace liaison::policy {
namespace {

// `later`'s list condition is covered by `earlier`'s: an absent (empty) list
// matches anything; a present one must include all of `later`'s values.
template <typename T>
bool ListCovers(const std::vector<T>& earlier, const std::vector<T>& later) {
  if (earlier.empty()) return true;
  if (later.empty()) return false;
  return std::all_of(later.begin(), later.end(), [&](const T& v) {
    return std::find(earlier.begin(), earlier.end(), v) != earlier.end();
  });
}

// The same for bit masks, where a full mask means "any value", including
// values this broker does not know (engine.cc Matches).
bool MaskCovers(uint32_t earlier, uint32_t later) {
  if (earlier == ~0u) return true;
  if (later == ~0u) return false;
  return (later & ~earlier) == 0;
}

// Field groups that hold a person's identity: allowing one whole releases it
// all, and every field added to it later.
bool IsBroadPattern(const std::string& pattern) {
  if (pattern == "*") return true;
  const std::string base =
      pattern.size() > 2 && pattern.compare(pattern.size() - 2, 2, ".*") == 0
          ? pattern.substr(0, pattern.size() - 2)
          : pattern;
  return base == "subject" || base == "reporter";
}

std::string Where(const AgencyPolicy& policy, int line) {
  return policy.agency->source + ":" + std::to_string(line);
}

// "file:line" of a rule, from its "file:line:col" source.
std::string RuleWhere(const Rule& rule) {
  const size_t col = rule.source.rfind(':');
  return col == std::string::npos ? rule.source : rule.source.substr(0, col);
}

void LintBroadAllows(const AgencyPolicy& policy, std::vector<std::string>& out) {
  for (const Rule& rule : policy.release) {
    for (const FieldEntry& entry : rule.entries) {
      if (entry.action.kind != ActionKind::kAllow || !IsBroadPattern(entry.pattern)) continue;
      out.push_back(Where(policy, entry.line) + ": release rule '" + rule.id + "': '" +
                    entry.pattern + ": allow' releases every field " +
                    (entry.pattern == "*" ? "of the message" : "under it") +
                    ", including fields added to the schema later; name the fields the "
                    "recipient needs instead");
    }
    if (rule.others && rule.others->kind == ActionKind::kAllow) {
      out.push_back(Where(policy, rule.others_line) + ": release rule '" + rule.id +
                    "': 'others: allow' releases every field the rule does not name, including "
                    "fields added to the schema later; name the fields the recipient needs and "
                    "use 'others: drop'");
    }
  }
}

void LintShadowed(const AgencyPolicy& policy, const std::vector<Rule>& rules,
                  std::vector<std::string>& out) {
  for (size_t later = 1; later < rules.size(); ++later) {
    for (size_t earlier = 0; earlier < later; ++earlier) {
      if (!AlwaysMatchesFirst(rules[earlier], rules[later])) continue;
      out.push_back(RuleWhere(rules[later]) + ": " + (rules[later].release ? "release" : "accept") +
                    " rule '" + rules[later].id + "' can never match: rule '" +
                    rules[earlier].id + "' (" + RuleWhere(rules[earlier]) +
                    ") comes first and matches every message it would; rules are tried top to "
                    "bottom, so put the narrower rule first or remove it");
      break;
    }
  }
}

}  // namespace

// Mirrors Matches() in engine.cc condition by condition; a condition added
// there must be added here, or this could claim a shadow that is not one.
bool AlwaysMatchesFirst(const Rule& earlier, const Rule& later) {
  if (later.messages & ~earlier.messages) return false;
  if (earlier.break_glass && !later.break_glass) return false;
  if (!ListCovers(earlier.agencies, later.agencies)) return false;
  if (!ListCovers(earlier.kinds, later.kinds)) return false;
  if (!ListCovers(earlier.regions, later.regions)) return false;
  if (!ListCovers(earlier.purposes, later.purposes)) return false;
  if (!ListCovers(earlier.legal_bases, later.legal_bases)) return false;
  if (!MaskCovers(earlier.consent, later.consent)) return false;
  if (!MaskCovers(earlier.handling, later.handling)) return false;
  if (!MaskCovers(earlier.risk, later.risk)) return false;
  if (earlier.subject_minor && earlier.subject_minor != later.subject_minor) return false;
  return true;
}

std::vector<std::string> LintPolicy(const AgencyPolicy& policy) {
  std::vector<std::string> out;
  LintBroadAllows(policy, out);
  LintShadowed(policy, policy.release, out);
  LintShadowed(policy, policy.accept, out);
  return out;
}

}  // namespace liaison::policy
