// libFuzzer target: what the broker does with a SEND body from an
// authenticated agency — verify, resolve addresses, decide every recipient
// under the example policies, rewrite each copy — for any bytes.
// The first input byte picks the sending agency.
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "config/broker_config.h"
#include "core/admission.h"
#include "policy/policy_set.h"

using namespace liaison;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the decisions' log lines, not findings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto policies = [] {
    auto set = policy::PolicySet::Load(LIAISON_SOURCE_DIR "/policies", "fuzz-secret");
    if (!set.ok()) __builtin_trap();
    return *set;
  }();
  static const broker::Dispatcher dispatcher{broker::Limits{}};
  if (size == 0) return 0;
  const auto& agencies = policies->directory().agencies();
  const auto& sender = agencies[data[0] % agencies.size()];
  // FlatBuffers need aligned input, as the reactor guarantees.
  std::vector<uint8_t> bytes(data + 1, data + size);
  const broker::Admission admission = dispatcher.Admit(*policies, sender, bytes);
  // Every copy the broker would send must itself be a valid Envelope.
  for (const auto& delivery : admission.deliveries) {
    if (wire::VerifyEnvelope({delivery.envelope.data(), delivery.envelope.size()}) == nullptr) __builtin_trap();
  }
  // Oracle beyond crashes (issue 15): what one input makes the broker write
  // stays within a fixed multiple of the input. Shared offsets may stretch
  // a message at most wire::kMaxExpansion (4) times; a transform at most
  // another 4 times (a pseudonym is 32 characters for a value of any length,
  // a value in a vector takes 12 bytes at least); the header adds the two
  // agency ids. The receipt names each recipient's fields (schema paths,
  // stored once and shared) and each unresolved address (from the input).
  // The ledger records of the message hold what the receipt holds, one
  // record per recipient, plus fixed metadata.
  const size_t n = bytes.size();
  std::vector<broker::RecipientOutcome> outcomes = admission.unresolved;
  for (const auto& delivery : admission.deliveries) {
    if (delivery.envelope.size() > 16 * n + 4096) __builtin_trap();
    outcomes.push_back(delivery.outcome);
  }
  if (outcomes.size() > broker::Limits{}.max_recipients * 2) __builtin_trap();
  const auto receipt = broker::BuildReceipt(admission.message_id, admission.code, admission.detail,
                                            sender.id, outcomes, policies->version());
  if (receipt.size() > 4 * n + 16384 + outcomes.size() * 2048) __builtin_trap();
  return 0;
}
