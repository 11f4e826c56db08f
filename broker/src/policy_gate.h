// The broker's gate for policy sets, at start and on every reload: checks
// the DPO signatures against the pinned keys (policy/trust.h) when signing
// is on, loads and validates the set, and says what goes into the ledger
// (each file version that goes live, each pin, each refusal). Used by
// main.cc only; the reactor just swaps in what passed.
#ifndef LIAISON_BROKER_POLICY_GATE_H_
#define LIAISON_BROKER_POLICY_GATE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "audit/ledger.h"
#include "config/broker_config.h"
#include "policy/policy_set.h"
#include "policy/trust.h"

namespace liaison::broker {

class PolicyGate {
 public:
  PolicyGate(const BrokerConfig& config, std::string pseudonym_secret)
      : config_(config), secret_(std::move(pseudonym_secret)) {}

  // Reads the pinned keys (signing on only).
  Status Init();

  struct Outcome {
    std::shared_ptr<const policy::PolicySet> set;  // null if refused
    std::string error;                             // why it was refused: what, where, what to do
    std::vector<audit::Entry> events;              // for the ledger, either way
  };
  // Checks and loads config.policies_dir. On success the pins are saved
  // and the caller must make `set` live. `keeping`: the version that stays
  // live if this one is refused ("" at start).
  Outcome Load(const std::string& keeping);

  // For /readyz and the start log: whether signing is on, how many keys
  // are pinned.
  std::string Describe() const;

 private:
  const BrokerConfig& config_;
  std::string secret_;
  policy::Pins pins_;
  std::map<std::string, std::string> live_;  // file -> SHA-256 of the version live now
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_POLICY_GATE_H_
