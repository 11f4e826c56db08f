// Applying a compiled policy set to one message: the facts rules match on,
// the decision for one recipient (sender's release rule AND recipient's
// accept rule), and the recipient's copy rewritten field by field.
//
// Everything here reads only immutable compiled state; nothing parses YAML
// or compares field paths as strings.
#ifndef LIAISON_BROKER_POLICY_ENGINE_H_
#define LIAISON_BROKER_POLICY_ENGINE_H_

#include <flatbuffers/flatbuffers.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "policy/policy_set.h"

namespace liaison::policy {

inline constexpr size_t kMaxLeaves = 128;  // checked against the schema in tests

// What rules match on, read once per message.
struct MessageFacts {
  wire::Payload type = wire::Payload::NONE;
  int purpose = -1;       // vocabulary index; -1 when absent or unknown
  int legal_basis = -1;
  wire::ConsentStatus consent = wire::ConsentStatus::unknown;
  wire::Handling handling = wire::Handling::unspecified;
  wire::RiskLevel risk = wire::RiskLevel::unspecified;
  std::optional<bool> subject_minor;  // unknown without a date of birth
  bool break_glass = false;           // a justification of real text was given
  // The UTC date of created_at (of the instant, whatever its offset), else
  // today's UTC date: ages and age bands are counted on it.
  int message_year = 0, message_month = 0, message_day = 0;
};

MessageFacts ExtractFacts(const wire::Envelope& envelope, const Vocabulary& vocabulary);

// A break-glass justification must carry real text: at least this many
// characters that are not white space. Admission refuses a shorter non-empty
// one (invalid_field), so it never silently fails to invoke break-glass.
inline constexpr size_t kMinBreakGlassCharacters = 10;

// The characters (code points) of UTF-8 `text` that are neither white space
// nor invisible (zero-width spaces, BOM); a byte that is not UTF-8 counts as
// one. Used for break-glass and for blank values, which are never tokenised.
size_t VisibleCharacters(std::string_view text);

// The first rule of `rules` that matches `counterpart` and `facts`.
const Rule* FirstMatch(const std::vector<Rule>& rules, const broker::Agency& counterpart,
                       const MessageFacts& facts);

struct Decision {
  const Rule* release = nullptr;  // the sender's rule that matched
  const Rule* accept = nullptr;   // the recipient's rule that matched
  const char* reason = nullptr;   // reason id when denied: no-release-rule, no-accept-rule
  bool allowed() const { return release && accept; }
  bool break_glass() const {
    return (release && release->break_glass) || (accept && accept->break_glass);
  }
};

Decision Decide(const AgencyPolicy& sender, const AgencyPolicy& recipient,
                const MessageFacts& facts);

// The action for each leaf of `type` under an allowed decision: what both
// rules' actions reveal (CombineActions).
void CombinePlans(const Decision& decision, wire::Payload type, Action* out);

// Names (never values) of the fields of one message, by what happened to them.
struct FieldReport {
  std::vector<const std::string*> released, transformed, dropped;
  void Clear() {
    released.clear();
    transformed.clear();
    dropped.clear();
  }
};

// Builds the recipient's copy of `in` into `fbb` (cleared first): the header
// with `from` = sender, `to` = only the recipient and `thread` = the copy's
// thread reference (none if empty; `derived_from`, the sender's reference,
// never passes), and the payload with `actions` applied. Fails only if the
// result does not verify (a bug).
Status Rewrite(const wire::Envelope& in, const std::string& sender_id,
               const std::string& recipient_id, const Action* actions,
               const std::array<uint8_t, 32>& pseudonym_key, const MessageFacts& facts,
               flatbuffers::FlatBufferBuilder& fbb, FieldReport* report, std::string_view thread = {});

// The pseudonym of `value` for the holder of `key`: 32 hex digits of
// HMAC-SHA256(key, path || 0 || value). Stable per recipient and field.
std::string Pseudonym(const std::array<uint8_t, 32>& key, std::string_view path,
                      std::string_view value);

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_POLICY_ENGINE_H_
