// The impact preview of a policy change (`liaison policy diff`): for every
// flow (sender, recipient, message type, purpose) worth checking, the
// broker's decision under the old set and under the new one, and every
// field whose action changes, with the deciding rule lines of both sides.
// Each decision is an explanation (explain.h): the broker's own admission,
// never a re-implementation.
#ifndef LIAISON_BROKER_EXPLAIN_POLICY_DIFF_H_
#define LIAISON_BROKER_EXPLAIN_POLICY_DIFF_H_

#include <map>
#include <string>
#include <vector>

#include "explain/explain.h"

namespace liaison::policy {

// A message to try flows with: a sample from policies/tests/messages.
struct SampleMessage {
  std::string name;               // file name
  std::vector<uint8_t> envelope;  // binary Envelope
};

// A flow seen in the ledger's metadata (never contents).
struct SeenFlow {
  std::string sender, recipient, type, purpose;
  uint64_t count = 0;
};

struct RuleLines {
  RuleLine release, accept;
};

struct FieldChange {
  std::string path;
  Action before, after;  // drop when the flow was denied on that side
  RuleLines lines_before, lines_after;
  bool widens = false;   // `after` reveals something `before` did not
};

struct FlowDiff {
  std::string sender, recipient, recipient_kind, type, purpose;
  std::string sample;     // the sample message used
  std::string seen;       // "ledger (N)", "sample", or both
  std::string before, after;  // "released (rule, rule)", "denied (reason)", "rejected (code: detail)", "no agency"
  bool released_before = false, released_after = false;
  std::vector<FieldChange> fields;
  bool changed() const { return before != after || !fields.empty(); }
  bool widens() const;
};

struct PolicyDiff {
  std::vector<FlowDiff> flows;        // every flow compared, changed or not
  std::vector<std::string> skipped;   // ledger flows without a sample of their type
  size_t newly_denied = 0, newly_released = 0, fields_widened = 0, fields_narrowed = 0;
  std::map<std::string, size_t> widened_by_kind;  // recipient kind -> fields newly shared
  bool widens() const { return newly_released > 0 || fields_widened > 0; }
  // "3 flows newly denied, 1 newly released, 12 fields newly shared with security-agency"
  std::string Summary() const;
};

// Compares `before` and `after` for every ordered pair of agencies (in
// either set) under every sample, and for every seen flow (under a sample
// of its type, with the flow's purpose).
StatusOr<PolicyDiff> DiffPolicies(const PolicySet& before, const PolicySet& after,
                                  const std::vector<SampleMessage>& samples, const std::vector<SeenFlow>& seen);

// Who signed the files of each side, for the reader ("agencies/x.yaml" ->
// fingerprints, "" unsigned).
struct SideInfo {
  std::string dir, version;
  std::vector<std::pair<std::string, std::string>> signers;
};

std::string FormatDiffText(const PolicyDiff& diff, const SideInfo& before, const SideInfo& after);
std::string FormatDiffJson(const PolicyDiff& diff, const SideInfo& before, const SideInfo& after);
// One self-contained page (inline style, no script, no external resource).
std::string FormatDiffHtml(const PolicyDiff& diff, const SideInfo& before, const SideInfo& after);

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_EXPLAIN_POLICY_DIFF_H_
