#include "policy_gate.h"

#include <spdlog/spdlog.h>

namespace liaison::broker {
namespace {

audit::Entry PolicyEvent(ledger::Decision decision, const std::string& agency, const std::string& file) {
  audit::Entry e;
  e.decision = decision;
  e.agency = agency;
  e.file = file;
  return e;
}

}  // namespace

Status PolicyGate::Init() {
  if (!config_.policy_signing.required) return Status::Ok();
  auto pins = policy::LoadPins(config_.policy_signing.pins_file);
  if (!pins.ok()) return pins.status();
  pins_ = std::move(*pins);
  return Status::Ok();
}

std::string PolicyGate::Describe() const {
  if (!config_.policy_signing.required) {
    return "policy signing: OFF (unsigned mode): any agency file in " + config_.policies_dir +
           " goes live unsigned; for production turn it on (docs/operations.md, \"Policy signing\")\n";
  }
  return "policy signing: on; " + std::to_string(pins_.size()) + " agency DPO key(s) pinned; vocabulary quorum " +
         std::to_string(config_.policy_signing.vocabulary_quorum) + "\n";
}

PolicyGate::Outcome PolicyGate::Load(const std::string& keeping) {
  Outcome out;
  const std::string& dir = config_.policies_dir;
  const bool signing = config_.policy_signing.required;
  auto refuse = [&](const std::string& file, const std::string& agency, const std::string& reason,
                    const std::string& hash) {
    auto e = PolicyEvent(ledger::Decision::policy_refused, agency, file);
    e.reason = reason;
    e.file_hash = hash;
    e.policy_version = keeping;
    out.events.push_back(std::move(e));
  };

  policy::TrustReport trust;
  if (signing) {
    trust = policy::CheckPolicySignatures(dir, pins_, static_cast<uint32_t>(config_.policy_signing.vocabulary_quorum));
    if (!trust.ok()) {
      std::map<std::string, std::string> hashes;
      for (const auto& f : trust.files) hashes[f.file] = f.sha256;
      for (const auto& p : trust.problems) refuse(p.file, p.agency, p.reason, hashes[p.file]);
      out.error = trust.Message();
      return out;
    }
  }

  std::vector<std::string> warnings;
  auto set = policy::PolicySet::Load(dir, secret_, &warnings);
  for (const auto& w : warnings) spdlog::warn("event=policy_warning detail=\"{}\"", w);
  if (!set.ok()) {
    refuse("", "", "invalid", "");
    out.error = set.status().message();
    return out;
  }

  // The set just loaded must be the bytes whose signatures were checked: a
  // file replaced in between is refused now and read again on its change.
  auto files = policy::DescribePolicyFiles(dir);
  if (!files.ok()) {
    refuse("", "", "unreadable", "");
    out.error = files.status().message();
    return out;
  }
  if (signing) {
    for (size_t i = 0; i < files->size(); ++i) {
      const bool same = i < trust.files.size() && trust.files[i].file == (*files)[i].file &&
                        trust.files[i].sha256 == (*files)[i].sha256;
      if (!same || files->size() != trust.files.size()) {
        refuse((*files)[i].file, (*files)[i].agency, "changed_while_loading", (*files)[i].sha256);
        out.error = dir + ": a policy file changed while it was being checked (" + (*files)[i].file +
                    "); it is checked again once it stops changing";
        return out;
      }
      (*files)[i].signer = trust.files[i].signer;
    }
    if (!trust.changes.empty()) {
      if (auto st = policy::SavePins(config_.policy_signing.pins_file, trust.pins); !st.ok()) {
        refuse("", "", "pins_not_saved", "");
        out.error = st.message() + "; the new DPO key pins cannot be kept, so the set does not go live";
        return out;
      }
    }
    pins_ = trust.pins;
    for (const auto& c : trust.changes) {
      auto e = PolicyEvent(c.rotated ? ledger::Decision::dpo_key_rotated : ledger::Decision::dpo_key_pinned,
                           c.agency, "");
      e.signer = c.new_fingerprint;
      e.previous_signer = c.old_fingerprint;
      out.events.push_back(std::move(e));
      // Each event name spelled out: operators (and tests/doc_events_test.sh)
      // find what the docs name by searching the source.
      if (c.rotated) {
        spdlog::info("event=dpo_key_rotated agency={} dpo_key_fingerprint={} previous={}", c.agency,
                     c.new_fingerprint, c.old_fingerprint);
      } else {
        spdlog::info("event=dpo_key_pinned agency={} dpo_key_fingerprint={}", c.agency, c.new_fingerprint);
      }
    }
  }

  std::map<std::string, std::string> live;
  for (const auto& f : *files) {
    live[f.file] = f.sha256;
    auto it = live_.find(f.file);
    if (it != live_.end() && it->second == f.sha256) continue;  // unchanged: already recorded
    auto e = PolicyEvent(ledger::Decision::policy_live, f.agency, f.file);
    e.file_hash = f.sha256;
    e.signer = signing ? f.signer : "unsigned";
    e.policy_version = (*set)->version();
    out.events.push_back(std::move(e));
  }
  live_ = std::move(live);
  out.set = std::move(*set);
  return out;
}

}  // namespace liaison::broker
