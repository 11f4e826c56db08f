// Admission of one inbound Envelope: size limit, FlatBuffers verification,
// header checks, sender binding, recipient resolution, and the per-recipient
// copy of the message. Pure (no sockets, no clock but the receipt's time), so
// that tests and fuzzers drive it directly; the reactor does the I/O.
#ifndef LIAISON_BROKER_CORE_ADMISSION_H_
#define LIAISON_BROKER_CORE_ADMISSION_H_

#include <flatbuffers/flatbuffers.h>

#include <span>
#include <string>
#include <vector>

#include "config/broker_config.h"
#include "liaison/wire.h"
#include "registry/agency_directory.h"
#include "store/store.h"

namespace liaison::policy {
class PolicySet;
struct Vocabulary;
}

namespace liaison::broker {

// What happened for one recipient (or one unresolvable address). Names of
// rules and fields only, never values.
struct RecipientOutcome {
  std::string recipient;  // agency id, or the address text when unresolved
  wire::Code code = wire::Code::stored;
  std::string reason = {};              // a reason id
  std::vector<std::string> rules = {};  // release rule id, then accept rule id
  std::vector<const std::string*> released = {}, transformed = {}, dropped = {};  // field paths
  bool break_glass = false;
};

// A message rewritten for one recipient under both sides' rules, ready to
// deliver; `outcome` holds the rules and fields for the receipt.
struct Delivery {
  const Agency* recipient = nullptr;
  flatbuffers::DetachedBuffer envelope;
  RecipientOutcome outcome;
  store::Thread thread;  // the copy's thread: its reference is in `envelope`
};

struct Admission {
  wire::Code code = wire::Code::ok;  // ok, or why the whole message was rejected
  std::string detail;                // names fields, never values
  std::string message_id;            // empty if unreadable
  std::vector<Delivery> deliveries;
  std::vector<RecipientOutcome> unresolved;  // unknown addresses and policy denials
  // The root of the message's case thread (store::Thread::root): its
  // parent's, or a new one.
  std::string thread_root;
  // A PermissionRequest's or PermissionGrant's names: agency ids, and
  // "kind:<kind>" for kinds (for the ledger; never payload values).
  std::vector<std::string> permission;
  // A PermissionGrant from the thread's originator: `permission` is granted
  // for the whole of thread_root once the batch commits.
  bool grant_accepted = false;
};

// The text form of an address, as docs/protocol.md and the CLI write it:
// "<agency-id>" or "kind:<kind>[@<region>]".
std::string AddressText(const wire::Recipient& recipient);

// A recipient's copy may be at most this many times limits.max_message_bytes
// (pseudonyms make short values longer); a larger copy is refused for that
// recipient with too_large, reason copy-too-large.
inline constexpr size_t kMaxCopyExpansion = 4;

class Dispatcher {
 public:
  explicit Dispatcher(const Limits& limits) : limits_(limits) {}

  // Decides what to do with `bytes` sent by the authenticated `sender`
  // (an agency of `policies`): checks, resolves the addresses, decides each
  // recipient under the policy set and rewrites its copy. Never throws;
  // every failure is an Admission with an error code.
  // `also_to` adds agencies by id (an erasure goes to every agency that
  // received the case); unknown ids among them are ignored.
  // `parent` is the thread that the message's derived_from names, as the
  // store holds it, if it belongs to `sender` (null otherwise: a message
  // that names a derived_from without one is rejected). Each copy gets a
  // new thread reference (Delivery::thread); a derived message's copies are
  // held to the parent thread's handling code (docs/policies.md, "Handling
  // codes").
  // `checked`: what wire::VerifyEnvelope's check (VerifyEnvelopeWithin with
  // kMaxExpansion times the size) found in these same `bytes`, if the
  // caller ran it; null and Admit runs it.
  Admission Admit(const policy::PolicySet& policies, const Agency& sender,
                  std::span<const uint8_t> bytes,
                  const std::vector<std::string>& also_to = {},
                  const store::Thread* parent = nullptr,
                  const wire::EnvelopeCheck* checked = nullptr) const;

 private:
  Limits limits_;
};

// Whether `text` has the form of a thread reference (32 lower-case hex
// digits): anything else is never looked up.
bool IsThreadRef(std::string_view text);

// Why the handling code of `parent`'s thread forbids a derived message of
// `sender`, stating `purpose`, to reach `recipient` ("handling-h0",
// "handling-h1", "handling-h2"), or empty if it does not.
std::string HandlingDenial(const store::Thread& parent, const Agency& sender, const Agency& recipient,
                           std::string_view purpose, const policy::Vocabulary& vocabulary);

// Builds a Receipt buffer (file identifier "LSNR").
flatbuffers::DetachedBuffer BuildReceipt(const std::string& message_id, wire::Code code,
                                         const std::string& detail, const std::string& from,
                                         const std::vector<RecipientOutcome>& recipients,
                                         const std::string& policy_version = "");

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_CORE_ADMISSION_H_
