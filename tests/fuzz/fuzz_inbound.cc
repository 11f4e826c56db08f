// libFuzzer target: what the broker does with a SEND body from an
// authenticated agency — verify, resolve addresses, decide every recipient
// under the example policies, rewrite each copy — for any bytes.
// The first input byte picks the sending agency.
#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "config/broker_config.h"
#include "policy/policy_set.h"
#include "routing/dispatcher.h"

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
  return 0;
}
