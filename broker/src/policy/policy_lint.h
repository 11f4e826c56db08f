// Warnings about a policy that loads but is probably not what its DPO meant:
// a release rule that lets whole groups of fields through, and a rule that can
// never match because an earlier rule of the same side matches first. They
// do not stop a policy from loading; `liaison policy check` prints them.
#ifndef LIAISON_BROKER_POLICY_POLICY_LINT_H_
#define LIAISON_BROKER_POLICY_POLICY_LINT_H_

#include <string>
#include <vector>

#include "policy/policy_set.h"

namespace liaison::policy {

// One "file:line: what; what to do" per finding, in file order by side.
std::vector<std::string> LintPolicy(const AgencyPolicy& policy);

// Whether every message that `later` matches is also matched by `earlier`
// (judged from the conditions alone, conservatively: false when unsure).
bool AlwaysMatchesFirst(const Rule& earlier, const Rule& later);

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_POLICY_POLICY_LINT_H_
