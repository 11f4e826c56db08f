// Explanations for data-protection officers: what exactly an agency would
// receive of a message, and which rule decided each field. Used by
// `liaison policy explain` and `liaison policy test`; never on the message
// path.
#ifndef LIAISON_BROKER_POLICY_EXPLAIN_H_
#define LIAISON_BROKER_POLICY_EXPLAIN_H_

#include <string>
#include <vector>

#include "policy/engine.h"

namespace liaison::policy {

struct FieldExplanation {
  const std::string* path;  // leaf path
  Action action;            // what happens to it
  std::string decided_by;   // "release rule 'x' (file:line): subject.*: allow"
};

struct Explanation {
  const broker::Agency* from = nullptr;
  const broker::Agency* to = nullptr;
  Decision decision;
  std::vector<FieldExplanation> fields;  // the fields present in the message
  std::vector<uint8_t> received;         // the recipient's copy (empty when denied)
};

// Explains `envelope` sent by `from` to `to` under `policies`.
StatusOr<Explanation> Explain(const PolicySet& policies, const broker::Agency& from,
                              const broker::Agency& to, const wire::Envelope& envelope);

// A readable account of `e` (without the message itself).
std::string FormatExplanation(const Explanation& e, const wire::Envelope& envelope);

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_POLICY_EXPLAIN_H_
