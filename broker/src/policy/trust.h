// Whose signatures a policy set needs (docs/policies.md, "Signing").
//
// Each agency's DPO key is pinned when the agency is onboarded: the first
// time the broker loads an agency file, it takes the key of
// DIR/dpo-keys/AGENCY.pub, and only if the file is signed by it. From then
// on an agency file goes live only if signed by the pinned key, or by a
// newer key that a chain of rotation statements (DIR/dpo-keys/*.rotation,
// each signed by the key before) leads to; the pin then moves to that key.
// The vocabulary needs valid signatures of the pinned keys of a quorum of
// distinct agencies. Pins live in a small file of the broker's state
// (policy_signing.pins_file); every change of a pin is in the ledger.
#ifndef LIAISON_BROKER_POLICY_TRUST_H_
#define LIAISON_BROKER_POLICY_TRUST_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "liaison/status.h"

namespace liaison::policy {

struct PinnedKey {
  std::string public_key;  // raw, 32 bytes
  std::string fingerprint;
};
using Pins = std::map<std::string, PinnedKey>;  // by agency id

// The pins file: one "AGENCY <public key hex>" line per agency. A missing
// file is no pins (a new deployment).
StatusOr<Pins> LoadPins(const std::string& path);
// Replaces the file atomically (mode 0600).
Status SavePins(const std::string& path, const Pins& pins);

// One file of a policy set, as it was checked.
struct PolicyFile {
  std::string file;    // relative to the policies folder: "agencies/x.yaml", "vocabulary.yaml"
  std::string agency;  // the agency id ("" for the vocabulary)
  std::string sha256;  // of its exact bytes
  std::string signer;  // fingerprint of the key that signed it; vocabulary: "fp,fp,..."; "" unsigned
};

struct PinChange {
  bool rotated = false;  // false: pinned at onboarding
  std::string agency, old_fingerprint, new_fingerprint;
};

struct TrustProblem {
  std::string file, agency;
  std::string reason;   // a reason id for the ledger: unsigned, wrong_signer, ...
  std::string message;  // what, where, what to do: for the log and the operator
};

struct TrustReport {
  std::vector<PolicyFile> files;  // vocabulary first, then agencies by name
  std::vector<PinChange> changes;
  Pins pins;  // the pins once this set goes live
  std::vector<TrustProblem> problems;
  bool ok() const { return problems.empty(); }
  // Every problem, one per line.
  std::string Message() const;
};

// Checks the signatures of DIR/vocabulary.yaml and DIR/agencies/*.yaml
// against `pins` (see above). Every problem is reported.
TrustReport CheckPolicySignatures(const std::string& dir, const Pins& pins, uint32_t vocabulary_quorum);

// The files of DIR with their hashes and whoever validly signed them (for
// an unsigned deployment, and for tools): no pins involved.
StatusOr<std::vector<PolicyFile>> DescribePolicyFiles(const std::string& dir);

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_POLICY_TRUST_H_
