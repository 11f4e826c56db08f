// A policy set: the vocabulary, every agency's identity and its release and
// accept rules, loaded from policies/, validated against the vocabulary and
// the message schema, and compiled into an immutable structure that the
// message path only reads. A reload builds a new set and swaps it in whole.
//
// File format and semantics: docs/policies.md (and ../shared/BRIEF.md §4).
#ifndef LIAISON_BROKER_POLICY_POLICY_SET_H_
#define LIAISON_BROKER_POLICY_POLICY_SET_H_

#include <array>
#include <map>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "liaison/status.h"
#include "policy/schema_layout.h"
#include "registry/agency_directory.h"

namespace liaison::policy {

// Field actions. They are not ordered: two actions can each reveal
// something the other hides (a mask shows a date's day, generalize(year) its
// year), so two rules' actions are combined by what each reveals
// (CombineActions), never by picking the "stricter" one.
enum class ActionKind : uint8_t {
  kAllow = 0,
  kMask,                 // mask(last:N): the last N characters (at most half) and the length
  kGeneralizeSubCounty,  // an address kept down to sub_county
  kGeneralizeCounty,     // an address kept down to county
  kGeneralizeYear,       // a date kept to its year
  kGeneralizeAgeBand,    // a date of birth as a 5-year age band at the message date
  kPseudonymize,         // HMAC-SHA256 under the recipient's key: equality only
  kDrop,
};
inline constexpr size_t kActionKinds = static_cast<size_t>(ActionKind::kDrop) + 1;

struct Action {
  ActionKind kind = ActionKind::kDrop;
  uint8_t mask_last = 0;  // for kMask
  bool operator==(const Action&) const = default;
};

// The action that reveals exactly what both `a` and `b` reveal of a value
// (their intersection), or drop where no single action does; e.g. mask(last:4)
// with generalize(year) is drop, mask(last:4) with mask(last:2) is
// mask(last:2). Read from a table computed at compile time; symmetric.
// The table is docs/policies.md section 7.
Action CombineActions(Action a, Action b);
// "allow", "mask(last:4)", "generalize(county)", ...
std::string ActionText(Action action);
// Parses the text form; nullopt if it is not an action.
std::optional<Action> ParseAction(std::string_view text);

// One "path: action" line of a rule's fields map.
struct FieldEntry {
  std::string pattern;  // "subject.national_id", "subject.*", "subject", "*"
  Action action;
  int line = 0;
};

// How one leaf is treated by one rule, and which entry said so.
struct LeafDecision {
  static constexpr int16_t kOthers = -1;     // the rule's `others:` default
  static constexpr int16_t kUnnamed = -2;    // not named: dropped (data minimisation)
  Action action;
  int16_t entry = kUnnamed;   // the entry that names the leaf, or kOthers / kUnnamed
  bool inapplicable = false;  // that entry's action cannot apply to the leaf: dropped
};

struct Rule {
  std::string id;
  std::string description;
  std::string source;   // file:line:column of the rule, for explanations
  std::string file;     // the agency file, for the lines of entries
  bool release = true;  // release rule (counterpart = recipient) or accept rule (= sender)

  // Conditions; an empty list or a full mask means "any".
  std::vector<std::string> agencies, kinds, regions;  // the counterpart
  uint32_t messages = 0;                              // bit per payload tag
  std::vector<uint16_t> purposes, legal_bases;        // vocabulary indexes
  uint32_t consent = ~0u, handling = ~0u, risk = ~0u; // bit per enum value
  std::optional<bool> subject_minor;
  bool break_glass = false;  // matches only when the sender gives a justification
  // Release rules only: to whom the recipient may pass on a message of an H2
  // thread this rule released (docs/policies.md, "Handling codes").
  std::vector<std::string> onward_agencies, onward_kinds;

  std::vector<FieldEntry> entries;
  std::optional<Action> others;
  int others_line = 0;  // the `others:` line, for explain and warnings
  // Per payload type, one decision per leaf of its layout (empty if the rule
  // does not cover that type).
  std::array<std::vector<LeafDecision>, kPayloadTypes> plans;
};

struct Retention {
  uint32_t undelivered_days = 30;  // an undelivered message expires after this
  uint32_t delivered_days = 365;   // an acknowledged message is purged after this
};

struct AgencyPolicy {
  const broker::Agency* agency = nullptr;
  std::vector<Rule> release;
  std::vector<Rule> accept;
  Retention retention;
  std::array<uint8_t, 32> pseudonym_key{};  // HKDF of the pseudonym key for this recipient
};

// How long a recipient has to answer a CaseReferral with a ReferralResponse,
// by urgency (docs/policies.md, "Response deadlines"): the brief's 4 / 24 /
// 72 hours unless vocabulary.yaml's response_deadlines overrides them.
// Indexed by wire::Urgency; 0 (unspecified) starts no clock.
inline constexpr int64_t kHourMs = 3600 * 1000;
using ResponseDeadlines = std::array<int64_t, 4>;
inline constexpr ResponseDeadlines kDefaultResponseDeadlines = {0, 4 * kHourMs, 24 * kHourMs, 72 * kHourMs};
// "4h", "90m", "30s", "3d" -> milliseconds; nullopt if not such a duration
// (a whole number from 1, then one unit letter).
std::optional<int64_t> ParseDeadline(std::string_view text);

struct Vocabulary {
  std::vector<std::string> kinds, regions, purposes, legal_bases, handling_codes;
  ResponseDeadlines response_deadlines = kDefaultResponseDeadlines;
  // Handling codes (docs/policies.md section 9a): the purposes that serve
  // judicial proceedings (H1), and for each purpose the others a message
  // derived from an H0 case may state instead of it.
  std::vector<std::string> judicial_purposes;
  std::map<std::string, std::vector<std::string>, std::less<>> compatible_purposes;
  // Index in the list, or -1.
  static int IndexOf(const std::vector<std::string>& list, std::string_view value);
};

class PolicySet {
 public:
  // Loads DIR/vocabulary.yaml and DIR/agencies/*.yaml. Every error in every
  // file is reported at once, each as "file:line:col: what; hint". The
  // `pseudonym_secret` (the broker's pseudonym key) keys the per-recipient
  // pseudonyms; notes that are not errors go to `warnings`.
  static StatusOr<std::shared_ptr<const PolicySet>> Load(const std::string& dir,
                                                         std::string_view pseudonym_secret,
                                                         std::vector<std::string>* warnings = nullptr);

  const broker::AgencyDirectory& directory() const { return *directory_; }
  std::shared_ptr<const broker::AgencyDirectory> shared_directory() const { return directory_; }
  const Vocabulary& vocabulary() const { return vocabulary_; }
  // The policy of a registered agency (never null for one of directory()).
  const AgencyPolicy& For(const broker::Agency& agency) const;
  const AgencyPolicy* Find(std::string_view agency_id) const;
  // First 16 hex digits of SHA-256 over every file of the set: stamped on
  // receipts so that every decision names the rules it was made under.
  const std::string& version() const { return version_; }

 private:
  PolicySet() = default;

  std::shared_ptr<const broker::AgencyDirectory> directory_;
  Vocabulary vocabulary_;
  std::vector<AgencyPolicy> policies_;  // parallel to directory_->agencies()
  std::string version_;
};

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_POLICY_POLICY_SET_H_
