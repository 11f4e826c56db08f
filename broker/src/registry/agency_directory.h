// Who is registered: the identities declared in policies/agencies/*.yaml
// (id, name, kind, region, CURVE public key), checked against the kinds and
// regions of policies/vocabulary.yaml. Immutable once loaded; shared by the
// ZAP handler and the reactor through a shared_ptr that a reload swaps.
#ifndef LIAISON_BROKER_REGISTRY_AGENCY_DIRECTORY_H_
#define LIAISON_BROKER_REGISTRY_AGENCY_DIRECTORY_H_

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "liaison/status.h"

namespace liaison::broker {

struct Agency {
  std::string id;             // matches the file name: agencies/<id>.yaml
  std::string name;
  std::string kind;           // a kind from the vocabulary
  std::string region;         // a region from the vocabulary
  std::string public_key;     // Z85; empty until the agency is onboarded
  std::string raw_key;        // the same key, 32 raw bytes (empty if none)
  // Key rotation: the agency's previous key stays valid until
  // previous_valid_until_ms (ms since the epoch), so that its systems can
  // switch over without a gap. Empty / 0 when there is none.
  std::string previous_public_key;
  std::string previous_raw_key;
  int64_t previous_valid_until_ms = 0;
  std::string source;         // file it came from, for messages
  // Who hears (metadata only) when a referral this agency sent is not
  // answered in time: `escalation: {agency: <id>}`; empty if none.
  std::string escalation_agency;
};

// True if `z85_key` may speak for `agency` at `now_ms`: its current key, or
// its previous key before the end of the overlap.
bool AcceptsKey(const Agency& agency, std::string_view z85_key, int64_t now_ms);
// Milliseconds since the epoch, now.
int64_t NowMillis();

class AgencyDirectory {
 public:
  // Loads DIR/vocabulary.yaml and DIR/agencies/*.yaml. Reports every error
  // (file:line:col) at once. Agencies without a public key load, but cannot
  // connect; a note for each is appended to `warnings` if given.
  static StatusOr<std::shared_ptr<const AgencyDirectory>> Load(
      const std::string& policies_dir, std::vector<std::string>* warnings = nullptr);

  // Builds a directory from agencies already in memory (tests, benchmarks).
  static std::shared_ptr<const AgencyDirectory> FromAgencies(std::vector<Agency> agencies);

  // nullptr if unknown.
  const Agency* Find(std::string_view id) const;
  const Agency* FindByKey(std::string_view raw_key_32) const;
  // Every agency of `kind`, in id order; empty if none.
  const std::vector<const Agency*>& OfKind(std::string_view kind) const;

  const std::vector<Agency>& agencies() const { return agencies_; }

 private:
  AgencyDirectory() = default;
  void BuildIndexes();

  std::vector<Agency> agencies_;  // sorted by id; indexes point into it
  std::unordered_map<std::string_view, const Agency*> by_id_;
  std::unordered_map<std::string_view, const Agency*> by_key_;
  std::unordered_map<std::string_view, std::vector<const Agency*>> by_kind_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_REGISTRY_AGENCY_DIRECTORY_H_
