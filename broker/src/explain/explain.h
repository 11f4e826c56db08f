// Explanations for data-protection officers: what exactly an agency would
// receive of a message, and which rule lines decided each field. Used by
// `liaison policy explain` and `liaison policy test`; never on the message
// path. An explanation is the broker's own admission of the message
// (broker::Dispatcher::Admit, core/admission.h): the checks, the decision and
// the recipient's copy are the broker's, and every value shown is read from
// that copy. That is why explain/ sits above core/, apart from policy/ (which
// the core reads and which must not read the core).
#ifndef LIAISON_BROKER_EXPLAIN_EXPLAIN_H_
#define LIAISON_BROKER_EXPLAIN_EXPLAIN_H_

#include <span>
#include <string>
#include <vector>

#include "config/broker_config.h"
#include "policy/engine.h"

namespace liaison::policy {

// What one rule says about one field.
struct RuleLine {
  std::string at;     // file:line of the entry that names the field (of the rule when none does)
  std::string entry;  // "subject.*: allow", "others: drop", "(not named)"
  Action action;      // what this rule alone does to the field
  std::string note;   // e.g. that the entry's action cannot apply to this field
};

struct FieldExplanation {
  const std::string* path;          // leaf path
  Action action;                    // what the broker did to it
  std::vector<std::string> values;  // its values in the recipient's copy
  RuleLine release, accept;
  std::string note;  // why `action` differs from what the rules combine to, when it does
};

struct Explanation {
  const broker::Agency* from = nullptr;
  const broker::Agency* to = nullptr;
  wire::Code code = wire::Code::ok;  // the broker's answer: stored, denied, or a rejection
  std::string reason;                // a denial's reason id, or a rejection's detail
  Decision decision;                 // the rules the broker applied (none when rejected)
  std::vector<FieldExplanation> fields;  // the fields present in the message
  std::vector<uint8_t> received;         // the recipient's copy (empty unless stored)
  bool released() const { return code == wire::Code::stored; }
  // The broker refuses the whole message (invalid_field, missing_field, ...).
  bool rejected() const { return code != wire::Code::stored && code != wire::Code::denied; }
};

// Admits `message` (an Envelope) from `from` as the broker does, addressed
// to `to` alone: a message without an id gets a stand-in one, and its `to`
// is replaced by `to`. Fails only if the broker's rewrite fails (a bug).
StatusOr<Explanation> Explain(const PolicySet& policies, const broker::Agency& from,
                              const broker::Agency& to, std::span<const uint8_t> message,
                              const broker::Limits& limits = {});

// The values of each leaf of `layout` in `envelope` (indexed like
// layout.leaves): text as is, codes by name, one value per item of a list.
std::vector<std::vector<std::string>> LeafValues(const PayloadLayout& layout,
                                                 const wire::Envelope& envelope);

// A readable account of `e`, field by field, without the recipient's copy.
std::string FormatExplanation(const Explanation& e, const wire::Envelope& envelope);

// `e` as an explain::Explanation FlatBuffer (schemas/explain.fbs).
flatbuffers::DetachedBuffer BuildExplanation(const Explanation& e, const std::string& policy_version,
                                             bool broker_pseudonyms);

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_EXPLAIN_EXPLAIN_H_
