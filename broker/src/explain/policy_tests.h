// Policy tests written by data-protection officers as data: YAML files under
// policies/tests/, each a list of cases (a message, from, to, the expected
// decision and the expected action per field). Run by `liaison policy test`.
// Format: docs/policies.md.
#ifndef LIAISON_BROKER_EXPLAIN_POLICY_TESTS_H_
#define LIAISON_BROKER_EXPLAIN_POLICY_TESTS_H_

#include <string>
#include <vector>

#include "policy/policy_set.h"

namespace liaison::policy {

struct PolicyTestResult {
  std::string name;
  std::string where;    // file:line of the case
  bool passed = false;
  std::string failure;  // the first difference, when failed
};

// Runs every case in `tests_dir`/*.yaml against `policies`. Fails (as a
// Status) only when a test file cannot be read or is malformed; a case that
// does not hold is a failed result.
StatusOr<std::vector<PolicyTestResult>> RunPolicyTests(const PolicySet& policies,
                                                       const std::string& tests_dir);

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_EXPLAIN_POLICY_TESTS_H_
