#include "core/admission.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <unordered_set>

#include "liaison/keys.h"
#include "policy/engine.h"
#include "policy/policy_set.h"

namespace liaison::broker {
namespace {

using wire::Code;

Admission Reject(Code code, std::string detail, std::string message_id = {}) {
  Admission a;
  a.code = code;
  a.detail = std::move(detail);
  a.message_id = std::move(message_id);
  return a;
}

// RFC 3339 as every other part of liaison reads it (wire::ParseRfc3339Millis).
bool IsRfc3339(std::string_view t) { return wire::ParseRfc3339Millis(t).has_value(); }

// Header checks that do not depend on the recipients.
Admission CheckHeader(const wire::Envelope& env, const Agency& sender, const Limits& limits,
                      const policy::Vocabulary& vocabulary) {
  const std::string id = env.id() ? env.id()->str() : std::string();
  if (id.empty()) return Reject(Code::missing_field, "id is missing");
  if (!wire::IsValidMessageId(id)) {
    // Never echoed, nor logged: an id that is not an opaque token may be
    // someone's name.
    return Reject(Code::invalid_field,
                  "id must match " + std::string(wire::kMessageIdFormat) +
                      " (an opaque token such as a ULID or UUID, never personal data); "
                      "leave it empty in the CLI or gateway to get a ULID");
  }
  if (env.schema_version() == 0) {
    return Reject(Code::invalid_field, "schema_version must be 1 or more", id);
  }
  if (env.schema_version() > wire::kSchemaVersion) {
    return Reject(Code::unsupported_version,
                  "schema_version " + std::to_string(env.schema_version()) +
                      " is newer than this broker understands (" +
                      std::to_string(wire::kSchemaVersion) + "); upgrade the broker first",
                  id);
  }
  if (env.from() && env.from()->size() > 0 && env.from()->string_view() != sender.id) {
    // The value is an agency id, not personal data, but the sender already
    // knows it; the detail names only the field.
    return Reject(Code::spoofed_sender,
                  "from names another agency; leave it empty, the broker sets it from your key", id);
  }
  if (env.payload_type() == wire::Payload::NONE) {
    return Reject(Code::missing_field, "payload is missing", id);
  }
  if (env.payload_type() > wire::Payload::MAX) {
    // A payload type from a newer schema: no policy can decide its fields.
    return Reject(Code::unsupported_version,
                  "payload_type is newer than this broker understands; upgrade the broker first", id);
  }
  if (!env.to() || env.to()->size() == 0) return Reject(Code::no_recipients, "to is empty", id);
  if (env.to()->size() > limits.max_recipients) {
    return Reject(Code::invalid_field,
                  "to has " + std::to_string(env.to()->size()) + " addresses; the limit is " +
                      std::to_string(limits.max_recipients),
                  id);
  }
  for (const char* name : {"created_at", "expires_at"}) {
    const flatbuffers::String* value =
        std::string_view(name) == "created_at" ? env.created_at() : env.expires_at();
    if (value && value->size() > 0 && !IsRfc3339(value->string_view())) {
      return Reject(Code::invalid_field,
                    std::string(name) + " is not an RFC 3339 time such as 2026-11-24T09:30:00Z", id);
    }
  }
  if (env.consent() && env.consent()->recorded_at() && env.consent()->recorded_at()->size() > 0 &&
      !IsRfc3339(env.consent()->recorded_at()->string_view())) {
    return Reject(Code::invalid_field, "consent.recorded_at is not an RFC 3339 time", id);
  }
  // A justification too short to be one (blank, "x") is refused rather than
  // ignored: the sender meant to invoke break-glass and must learn it did not.
  if (env.break_glass() && env.break_glass()->size() > 0 &&
      policy::VisibleCharacters(env.break_glass()->string_view()) <
          policy::kMinBreakGlassCharacters) {
    return Reject(Code::invalid_field,
                  "break_glass: a justification needs at least " +
                      std::to_string(policy::kMinBreakGlassCharacters) +
                      " characters other than spaces; write why it is needed, or leave "
                      "break_glass empty",
                  id);
  }
  // The detail names the field, not its value: a sender may have put
  // anything there.
  if (env.purpose() && env.purpose()->size() > 0 &&
      policy::Vocabulary::IndexOf(vocabulary.purposes, env.purpose()->string_view()) < 0) {
    return Reject(Code::invalid_field,
                  "purpose is not a purpose of policies/vocabulary.yaml", id);
  }
  if (env.legal_basis() && env.legal_basis()->size() > 0 &&
      policy::Vocabulary::IndexOf(vocabulary.legal_bases, env.legal_basis()->string_view()) < 0) {
    return Reject(Code::invalid_field,
                  "legal_basis is not a legal basis of policies/vocabulary.yaml", id);
  }
  Admission ok;
  ok.message_id = id;
  return ok;
}

// A new thread reference: 128 random bits, hex; nullopt if the generator
// fails (never a weaker value).
std::optional<std::string> NewThreadRef() {
  unsigned char bytes[16];
  if (!RandomBytes(bytes, sizeof bytes)) return std::nullopt;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t i = 0; i < sizeof bytes; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return out;
}

bool Contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

}  // namespace

bool IsThreadRef(std::string_view text) {
  return text.size() == 32 &&
         std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string HandlingDenial(const store::Thread& parent, const Agency& sender, const Agency& recipient,
                           std::string_view purpose, const policy::Vocabulary& vocabulary) {
  // The originator's own data: its codes bind the others, not itself.
  if (parent.origin == sender.id) return "";
  if (parent.handling == static_cast<int32_t>(wire::Handling::H0) && !purpose.empty() && purpose != parent.purpose) {
    // A message that states no purpose keeps the original's.
    auto compatible = vocabulary.compatible_purposes.find(parent.purpose);
    if (compatible == vocabulary.compatible_purposes.end() || !Contains(compatible->second, purpose)) {
      return "handling-h0";
    }
  }
  // What the originator granted since (PermissionGrant) lifts H1 and H2
  // for that recipient.
  const bool granted = Contains(parent.granted, recipient.id) || Contains(parent.granted, "kind:" + recipient.kind);
  if (parent.handling == static_cast<int32_t>(wire::Handling::H1) && Contains(vocabulary.judicial_purposes, purpose) &&
      !granted) {
    return "handling-h1";
  }
  if (parent.handling == static_cast<int32_t>(wire::Handling::H2)) {
    const bool allowed = recipient.id == parent.origin || Contains(parent.circle, recipient.id) ||
                         Contains(parent.onward, recipient.id) || Contains(parent.onward, "kind:" + recipient.kind) ||
                         granted;
    if (!allowed) return "handling-h2";
  }
  return "";
}

std::string AddressText(const wire::Recipient& r) {
  if (r.agency() && r.agency()->size() > 0) return r.agency()->str();
  std::string text = "kind:" + (r.kind() ? r.kind()->str() : std::string());
  if (r.region() && r.region()->size() > 0) text += "@" + r.region()->str();
  return text;
}

Admission Dispatcher::Admit(const policy::PolicySet& policies, const Agency& sender,
                            std::span<const uint8_t> bytes, const std::vector<std::string>& also_to,
                            const store::Thread* parent, const wire::EnvelopeCheck* checked) const {
  const AgencyDirectory& directory = policies.directory();
  if (bytes.size() > limits_.max_message_bytes) {
    return Reject(Code::too_large, "message is " + std::to_string(bytes.size()) +
                                       " bytes; the limit is " +
                                       std::to_string(limits_.max_message_bytes));
  }
  // Counted before anything else reads the message: a buffer that shares
  // offsets would otherwise expand in the verifier, the rewrite and the store.
  // The check is made with VerifyEnvelope's wider budget (the Pipeline
  // makes it once per message, for its dedupe lookup too). The walk stops
  // at the first fault or past that budget, so it would have gone past this
  // narrower one exactly when it counted more than it.
  const size_t budget = std::min<size_t>(limits_.max_message_bytes, bytes.size() * wire::kMaxExpansion);
  wire::EnvelopeCheck own;
  if (!checked) own = wire::VerifyEnvelopeWithin(bytes, bytes.size() * wire::kMaxExpansion);
  const wire::EnvelopeCheck& check = checked ? *checked : own;
  if (check.too_large || check.expanded > budget) {
    return Reject(Code::too_large,
                  "message expands past the limit of " + std::to_string(budget) +
                      " bytes (the smaller of limits.max_message_bytes and " +
                      std::to_string(wire::kMaxExpansion) +
                      " times its size) when each reference to a shared string, vector or table "
                      "is counted (every copy repeats it); write each value where it is used");
  }
  const wire::Envelope* env = check.envelope;
  if (!env) {
    return Reject(Code::malformed,
                  "not a valid Envelope FlatBuffer (file identifier LSNE, schemas/envelope.fbs)");
  }
  Admission admission = CheckHeader(*env, sender, limits_, policies.vocabulary());
  if (admission.code != Code::ok) return admission;
  if (env->thread() && env->thread()->size() > 0) {
    return Reject(Code::invalid_field,
                  "thread is set by the broker on each copy it delivers; leave it empty, and to answer or pass "
                  "on a message you received put its thread in derived_from",
                  admission.message_id);
  }
  if (env->derived_from() && env->derived_from()->size() > 0 && (!parent || parent->holder != sender.id)) {
    // The same answer whether the reference is unknown or another agency's:
    // a sender learns nothing of threads it does not hold.
    return Reject(Code::invalid_field,
                  "derived_from is not the thread of a message this agency received: copy it from the thread "
                  "field of the message you answer or pass on (it is kept as long as that message's receipt)",
                  admission.message_id);
  }
  // Permission requests and grants (docs/protocol.md, "Permission requests
  // and grants"): control messages about one thread, between its
  // originator and an agency that holds its data.
  const bool permission_request = env->payload_type() == wire::Payload::PermissionRequest;
  const bool permission_grant = env->payload_type() == wire::Payload::PermissionGrant;
  const bool control = permission_request || permission_grant;
  bool grant_refused = false;
  if (control) {
    const std::string type = wire::EnumNamePayload(env->payload_type());
    if (!parent) {
      return Reject(Code::missing_field,
                    "derived_from is missing: a " + type +
                        " names the thread it is about (the thread field of the message you received, or of "
                        "the PermissionRequest you answer)",
                    admission.message_id);
    }
    const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* agencies = nullptr;
    const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* kinds = nullptr;
    if (const auto* request = env->payload_as_PermissionRequest()) {
      agencies = request->agencies();
      kinds = request->kinds();
    } else if (const auto* grant = env->payload_as_PermissionGrant()) {
      agencies = grant->agencies();
      kinds = grant->kinds();
    }
    // Agency ids and kinds are vocabulary names (no personal data): checked,
    // so that the ledger and the grant hold only names the broker knows.
    if (agencies) {
      for (flatbuffers::uoffset_t i = 0; i < agencies->size(); ++i) {
        if (!directory.Find(agencies->Get(i)->string_view())) {
          return Reject(Code::invalid_field,
                        "payload.agencies[" + std::to_string(i) +
                            "] is not an agency of this broker; give agency ids as in its directory",
                        admission.message_id);
        }
        admission.permission.push_back(agencies->Get(i)->str());
      }
    }
    if (kinds) {
      for (flatbuffers::uoffset_t i = 0; i < kinds->size(); ++i) {
        if (!Contains(policies.vocabulary().kinds, kinds->Get(i)->str())) {
          return Reject(Code::invalid_field,
                        "payload.kinds[" + std::to_string(i) +
                            "] is not an agency kind of the vocabulary (policies/vocabulary.yaml, kinds)",
                        admission.message_id);
        }
        admission.permission.push_back("kind:" + kinds->Get(i)->str());
      }
    }
    if (admission.permission.empty()) {
      return Reject(Code::missing_field, "payload.agencies and payload.kinds are both empty: name whom the " + type +
                                             " is for", admission.message_id);
    }
    if (permission_request) {
      if (parent->origin == sender.id) {
        return Reject(Code::invalid_field,
                      "derived_from names a thread this agency originated: it needs nobody's permission to pass "
                      "it on",
                      admission.message_id);
      }
      if (parent->handling != static_cast<int32_t>(wire::Handling::H1) &&
          parent->handling != static_cast<int32_t>(wire::Handling::H2)) {
        return Reject(Code::invalid_field,
                      "derived_from names a thread whose handling code is neither H1 nor H2: passing it on needs "
                      "no permission",
                      admission.message_id);
      }
    }
    // Only the originator may grant: another agency's grant is denied for
    // every recipient (receipt and ledger), and grants nothing.
    grant_refused = permission_grant && parent->origin != sender.id;
    admission.grant_accepted = permission_grant && !grant_refused;
  }
  if (parent) {
    // A response or update derived from a thread answers that thread's
    // message: its in_reply_to, if given, names it.
    const flatbuffers::String* in_reply_to = nullptr;
    if (const auto* response = env->payload_as_ReferralResponse()) in_reply_to = response->in_reply_to();
    if (const auto* update = env->payload_as_CaseUpdate()) in_reply_to = update->in_reply_to();
    if (const auto* grant = env->payload_as_PermissionGrant()) in_reply_to = grant->in_reply_to();
    if (in_reply_to && in_reply_to->size() > 0 && in_reply_to->string_view() != parent->message_id) {
      return Reject(Code::invalid_field,
                    "payload.in_reply_to is not the id of the message whose thread derived_from names; give "
                    "that message's id, or leave in_reply_to empty",
                    admission.message_id);
    }
  }
  // Text must be UTF-8: recipients read it as JSON, and the gateway could
  // not hand it on otherwise.
  if (!check.non_utf8_field.empty()) {
    return Reject(Code::invalid_field, check.non_utf8_field + ": text is not valid UTF-8", admission.message_id);
  }

  // Resolve every address; the same agency reached twice gets one copy.
  std::vector<const Agency*> recipients;
  std::unordered_set<const Agency*> seen;
  if (permission_request) {
    // To the thread's originator only, whatever `to` says: the requester
    // need not know who that is (a case passed on to it came from another
    // holder).
    if (const Agency* origin = directory.Find(parent->origin)) {
      seen.insert(origin);
      recipients.push_back(origin);
    } else {
      admission.unresolved.push_back({"originator", Code::unknown_recipient, "no-matching-agency"});
    }
  }
  for (flatbuffers::uoffset_t i = 0; !permission_request && i < env->to()->size(); ++i) {
    const wire::Recipient* address = env->to()->Get(i);
    const bool has_agency = address->agency() && address->agency()->size() > 0;
    const bool has_kind = address->kind() && address->kind()->size() > 0;
    const bool has_region = address->region() && address->region()->size() > 0;
    if (has_agency == has_kind || (has_agency && has_region)) {
      return Reject(Code::invalid_field,
                    "to[" + std::to_string(i) +
                        "]: give either agency, or kind with an optional region",
                    admission.message_id);
    }
    if (has_agency) {
      if (const Agency* a = directory.Find(address->agency()->string_view())) {
        if (seen.insert(a).second) recipients.push_back(a);
        continue;
      }
    } else {
      bool matched = false;
      for (const Agency* a : directory.OfKind(address->kind()->string_view())) {
        if (a->id == sender.id) continue;  // a kind address never loops back
        if (has_region && a->region != address->region()->string_view()) continue;
        matched = true;
        if (seen.insert(a).second) recipients.push_back(a);
      }
      if (matched) continue;
    }
    admission.unresolved.push_back(
        {AddressText(*address), Code::unknown_recipient, "no-matching-agency"});
  }
  for (const std::string& id : also_to) {
    const Agency* a = directory.Find(id);
    if (a && a->id != sender.id && seen.insert(a).second) recipients.push_back(a);
  }
  if (recipients.size() > limits_.max_recipients + also_to.size()) {
    return Reject(Code::invalid_field,
                  "to resolves to " + std::to_string(recipients.size()) +
                      " agencies; the limit is " + std::to_string(limits_.max_recipients),
                  admission.message_id);
  }

  // One decision and one copy per recipient. The copy's `from` is the
  // authenticated sender and its `to` names only that recipient: no agency
  // learns who else was addressed.
  // A derived message inherits its parent thread's restrictions if that
  // thread carries a handling code.
  const bool inherit = parent && parent->handling != static_cast<int32_t>(wire::Handling::unspecified);
  const policy::MessageFacts facts = policy::ExtractFacts(*env, policies.vocabulary());
  const std::string_view facts_purpose = env->purpose() ? env->purpose()->string_view() : std::string_view();
  const policy::AgencyPolicy& sender_policy = policies.For(sender);
  std::array<policy::Action, policy::kMaxLeaves> actions;
  policy::FieldReport report;
  flatbuffers::FlatBufferBuilder fbb(bytes.size() + 512);
  const policy::PayloadLayout* control_layout = control ? policy::SchemaLayout::Get().For(env->payload_type()) : nullptr;
  for (const Agency* recipient : recipients) {
    RecipientOutcome outcome{recipient->id};
    if (grant_refused) {
      outcome.code = Code::denied;
      outcome.reason = "permission-not-originator";
      spdlog::info("event=denied agency={} recipient={} id={} type={} reason={}", sender.id, recipient->id,
                   admission.message_id, wire::EnumNamePayload(facts.type), outcome.reason);
      admission.unresolved.push_back(std::move(outcome));
      continue;
    }
    // A permission message is not the case's data: it carries agency names
    // about a thread (a request goes to its originator only, a grant comes
    // from it only), so no release or accept rule decides it. Its header
    // free text (which could name people) is dropped.
    const policy::Decision decision =
        control ? policy::Decision{} : policy::Decide(sender_policy, policies.For(*recipient), facts);
    outcome.break_glass = decision.break_glass();
    if (decision.release) outcome.rules.push_back(decision.release->id);
    if (decision.accept) outcome.rules.push_back(decision.accept->id);
    if (decision.allowed() && parent) {
      if (std::string denial = HandlingDenial(*parent, sender, *recipient, facts_purpose, policies.vocabulary());
          !denial.empty()) {
        outcome.code = Code::denied;
        outcome.reason = std::move(denial);
        spdlog::info("event=denied agency={} recipient={} id={} type={} reason={}", sender.id, recipient->id,
                     admission.message_id, wire::EnumNamePayload(facts.type), outcome.reason);
        admission.unresolved.push_back(std::move(outcome));
        continue;
      }
    }
    if (!control && !decision.allowed()) {
      outcome.code = Code::denied;
      outcome.reason = decision.reason;
      spdlog::info("event=denied agency={} recipient={} id={} type={} reason={}", sender.id,
                   recipient->id, admission.message_id, wire::EnumNamePayload(facts.type),
                   decision.reason);
      admission.unresolved.push_back(std::move(outcome));
      continue;
    }
    std::optional<std::string> thread_ref = NewThreadRef();
    if (!thread_ref) {
      spdlog::error("event=thread_ref_failed agency={} recipient={} id={} error=\"RAND_bytes failed\"", sender.id,
                    recipient->id, admission.message_id);
      outcome.code = Code::internal_error;
      outcome.reason = "thread-ref-failed";
      admission.unresolved.push_back(std::move(outcome));
      continue;
    }
    if (control) {
      if (!control_layout) {
        outcome.code = Code::internal_error;
        outcome.reason = "rewrite-failed";
        admission.unresolved.push_back(std::move(outcome));
        continue;
      }
      for (size_t i = 0; i < control_layout->leaves.size(); ++i) {
        actions[i].kind = static_cast<int>(i) < control_layout->first_header_leaf ? policy::ActionKind::kAllow
                                                                                   : policy::ActionKind::kDrop;
      }
    } else {
      policy::CombinePlans(decision, facts.type, actions.data());
    }
    report.Clear();
    Status st = policy::Rewrite(*env, sender.id, recipient->id, actions.data(),
                                policies.For(*recipient).pseudonym_key, facts, fbb, &report, *thread_ref);
    if (!st.ok()) {
      spdlog::error("event=rewrite_failed agency={} recipient={} id={} error=\"{}\"", sender.id,
                    recipient->id, admission.message_id, st.message());
      outcome.code = Code::internal_error;
      outcome.reason = "rewrite-failed";
      admission.unresolved.push_back(std::move(outcome));
      continue;
    }
    if (fbb.GetSize() > limits_.max_message_bytes * kMaxCopyExpansion) {
      // Unreachable for a message within the expansion limit unless a
      // transform grows it (a pseudonym is 32 characters): bounded anyway,
      // so that no recipient's copy can outgrow what the store accepts.
      spdlog::warn("event=copy_too_large agency={} recipient={} id={} bytes={}", sender.id,
                   recipient->id, admission.message_id, fbb.GetSize());
      outcome.code = Code::too_large;
      outcome.reason = "copy-too-large";
      admission.unresolved.push_back(std::move(outcome));
      continue;
    }
    outcome.released = report.released;
    outcome.transformed = report.transformed;
    outcome.dropped = report.dropped;
    if (outcome.break_glass) {
      // For the sender's DPO: who, to whom, under which rules. Never the
      // justification text, which may hold personal data.
      spdlog::warn("event=break_glass agency={} recipient={} id={} release_rule={} accept_rule={}",
                   sender.id, recipient->id, admission.message_id, decision.release->id,
                   decision.accept->id);
    }
    store::Thread thread;
    thread.ref = std::move(*thread_ref);
    thread.holder = recipient->id;
    thread.message_id = admission.message_id;
    if (inherit) {
      thread.onward = parent->onward;
    } else if (control) {
      // A permission message on a thread without a code: no onward list.
    } else {
      for (const std::string& a : decision.release->onward_agencies) thread.onward.push_back(a);
      for (const std::string& k : decision.release->onward_kinds) thread.onward.push_back("kind:" + k);
    }
    admission.deliveries.push_back({recipient, fbb.Release(), std::move(outcome), std::move(thread)});
  }
  // The thread's root: a derived message stays in its parent's thread, under
  // the code of the first message of it that carried one (its originator,
  // purpose and recipients); else this message is that first one.
  std::optional<std::string> root = parent ? std::optional<std::string>(parent->root) : NewThreadRef();
  if (!root) {
    spdlog::error("event=thread_ref_failed agency={} id={} error=\"RAND_bytes failed\"", sender.id,
                  admission.message_id);
    return Reject(Code::internal_error, "the broker could not make a thread reference; resend later with the same id",
                  admission.message_id);
  }
  admission.thread_root = *root;
  std::vector<std::string> circle;
  if (!inherit) {
    for (const Delivery& d : admission.deliveries) circle.push_back(d.recipient->id);
  }
  for (Delivery& d : admission.deliveries) {
    d.thread.root = *root;
    if (inherit) {
      d.thread.origin = parent->origin;
      d.thread.handling = parent->handling;
      d.thread.purpose = parent->purpose;
      d.thread.circle = parent->circle;
    } else {
      d.thread.origin = sender.id;
      d.thread.handling = static_cast<int32_t>(env->handling());
      d.thread.purpose = env->purpose() ? env->purpose()->str() : std::string();
      d.thread.circle = circle;
    }
  }
  return admission;
}

namespace {

flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>> Names(
    flatbuffers::FlatBufferBuilder& fbb, const std::vector<const std::string*>& names, bool shared) {
  if (names.empty()) return 0;
  std::vector<flatbuffers::Offset<flatbuffers::String>> offsets;
  offsets.reserve(names.size());
  for (const std::string* n : names) offsets.push_back(shared ? fbb.CreateSharedString(*n) : fbb.CreateString(*n));
  return fbb.CreateVector(offsets);
}

}  // namespace

flatbuffers::DetachedBuffer BuildReceipt(const std::string& message_id, wire::Code code,
                                         const std::string& detail, const std::string& from,
                                         const std::vector<RecipientOutcome>& recipients,
                                         const std::string& policy_version) {
  flatbuffers::FlatBufferBuilder fbb(256 + 512 * recipients.size());
  std::vector<flatbuffers::Offset<wire::RecipientReceipt>> entries;
  // Recipients under the same rules name the same fields: stored once. One
  // recipient names each at most once, and the lookup would only cost.
  const bool shared = recipients.size() > 1;
  for (const auto& r : recipients) {
    std::vector<flatbuffers::Offset<flatbuffers::String>> rules;
    for (const auto& rule : r.rules) rules.push_back(shared ? fbb.CreateSharedString(rule) : fbb.CreateString(rule));
    entries.push_back(wire::CreateRecipientReceipt(
        fbb, fbb.CreateString(r.recipient), r.code,
        r.reason.empty() ? 0 : fbb.CreateString(r.reason),
        rules.empty() ? 0 : fbb.CreateVector(rules), Names(fbb, r.released, shared),
        Names(fbb, r.transformed, shared), Names(fbb, r.dropped, shared), r.break_glass));
  }
  auto receipt = wire::CreateReceiptDirect(
      fbb, message_id.c_str(), code, detail.empty() ? nullptr : detail.c_str(),
      from.empty() ? nullptr : from.c_str(),
      policy_version.empty() ? nullptr : policy_version.c_str(), wire::NowRfc3339().c_str(),
      &entries);
  wire::FinishReceiptBuffer(fbb, receipt);
  return fbb.Release();
}

}  // namespace liaison::broker
