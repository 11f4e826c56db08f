#include "routing/dispatcher.h"

#include <algorithm>
#include <cctype>
#include <unordered_set>

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

bool IsPrintableId(std::string_view id) {
  return std::all_of(id.begin(), id.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
}

// Accepts "YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)".
bool IsRfc3339(std::string_view t) {
  auto digits = [&](size_t pos, size_t n) {
    if (pos + n > t.size()) return false;
    for (size_t i = pos; i < pos + n; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(t[i]))) return false;
    }
    return true;
  };
  if (!(digits(0, 4) && t.size() > 19 && t[4] == '-' && digits(5, 2) && t[7] == '-' &&
        digits(8, 2) && (t[10] == 'T' || t[10] == 't') && digits(11, 2) && t[13] == ':' &&
        digits(14, 2) && t[16] == ':' && digits(17, 2))) {
    return false;
  }
  auto number = [&](size_t pos, size_t n) {
    int v = 0;
    for (size_t i = pos; i < pos + n; ++i) v = v * 10 + (t[i] - '0');
    return v;
  };
  if (number(5, 2) < 1 || number(5, 2) > 12 || number(8, 2) < 1 || number(8, 2) > 31 ||
      number(11, 2) > 23 || number(14, 2) > 59 || number(17, 2) > 60) {
    return false;
  }
  size_t pos = 19;
  if (t[pos] == '.') {
    ++pos;
    size_t start = pos;
    while (pos < t.size() && std::isdigit(static_cast<unsigned char>(t[pos]))) ++pos;
    if (pos == start) return false;
  }
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) return pos + 1 == t.size();
  return pos + 6 == t.size() && (t[pos] == '+' || t[pos] == '-') && digits(pos + 1, 2) &&
         t[pos + 3] == ':' && digits(pos + 4, 2);
}

// Header checks that do not depend on the recipients.
Admission CheckHeader(const wire::Envelope& env, const Agency& sender, const Limits& limits) {
  const std::string id = env.id() ? env.id()->str() : std::string();
  if (id.empty()) return Reject(Code::missing_field, "id is missing");
  if (id.size() > 128 || !IsPrintableId(id)) {
    return Reject(Code::invalid_field, "id must be 1 to 128 printable ASCII characters, no spaces");
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
  Admission ok;
  ok.message_id = id;
  return ok;
}

}  // namespace

std::string AddressText(const wire::Recipient& r) {
  if (r.agency() && r.agency()->size() > 0) return r.agency()->str();
  std::string text = "kind:" + (r.kind() ? r.kind()->str() : std::string());
  if (r.region() && r.region()->size() > 0) text += "@" + r.region()->str();
  return text;
}

Admission Dispatcher::Admit(const AgencyDirectory& directory, const Agency& sender,
                            std::span<const uint8_t> bytes) const {
  if (bytes.size() > limits_.max_message_bytes) {
    return Reject(Code::too_large, "message is " + std::to_string(bytes.size()) +
                                       " bytes; the limit is " +
                                       std::to_string(limits_.max_message_bytes));
  }
  const wire::Envelope* env = wire::VerifyEnvelope(bytes);
  if (!env) {
    return Reject(Code::malformed,
                  "not a valid Envelope FlatBuffer (file identifier LSNE, schemas/envelope.fbs)");
  }
  Admission admission = CheckHeader(*env, sender, limits_);
  if (admission.code != Code::ok) return admission;

  // Resolve every address; the same agency reached twice gets one copy.
  std::vector<const Agency*> recipients;
  std::unordered_set<const Agency*> seen;
  for (flatbuffers::uoffset_t i = 0; i < env->to()->size(); ++i) {
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
  if (recipients.size() > limits_.max_recipients) {
    return Reject(Code::invalid_field,
                  "to resolves to " + std::to_string(recipients.size()) +
                      " agencies; the limit is " + std::to_string(limits_.max_recipients),
                  admission.message_id);
  }

  // One copy per recipient, with `from` bound to the authenticated sender and
  // `to` naming only that recipient: no agency learns who else was addressed.
  std::unique_ptr<wire::EnvelopeT> copy(env->UnPack());
  copy->from = sender.id;
  copy->to.clear();
  copy->to.push_back(std::make_unique<wire::RecipientT>());
  for (const Agency* recipient : recipients) {
    copy->to[0]->agency = recipient->id;
    flatbuffers::FlatBufferBuilder fbb(bytes.size() + 256);
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, copy.get()));
    admission.deliveries.push_back({recipient, fbb.Release()});
  }
  return admission;
}

flatbuffers::DetachedBuffer BuildReceipt(const std::string& message_id, wire::Code code,
                                         const std::string& detail, const std::string& from,
                                         const std::vector<RecipientOutcome>& recipients) {
  flatbuffers::FlatBufferBuilder fbb(256 + 64 * recipients.size());
  std::vector<flatbuffers::Offset<wire::RecipientReceipt>> entries;
  for (const auto& r : recipients) {
    entries.push_back(wire::CreateRecipientReceiptDirect(
        fbb, r.recipient.c_str(), r.code, r.reason.empty() ? nullptr : r.reason.c_str()));
  }
  auto receipt = wire::CreateReceiptDirect(
      fbb, message_id.c_str(), code, detail.empty() ? nullptr : detail.c_str(),
      from.empty() ? nullptr : from.c_str(), nullptr, wire::NowRfc3339().c_str(), &entries);
  wire::FinishReceiptBuffer(fbb, receipt);
  return fbb.Release();
}

}  // namespace liaison::broker
