#include "request.h"

#include <openssl/sha.h>

#include <cctype>
#include <charconv>

#include "liaison/keys.h"

namespace liaison::gateway {

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return HexEncode(digest, sizeof digest);
}

// %XX-decodes one path segment; nullopt on a malformed escape.
std::optional<std::string> PercentDecode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return std::nullopt;
    int value = 0;
    auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
    if (ec != std::errc() || p != in.data() + i + 3) return std::nullopt;
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

std::string PercentEncode(std::string_view in) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : in) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// FlatBuffers' parser errors may quote what they could not parse ("value:
// ...", "starting with: ..."): a value from the message. Keep where and
// which field, drop the quote.
std::string WithoutValues(const std::string& error) {
  const auto at = error.find("error: ");
  if (at == std::string::npos) return "the body is not valid JSON for an Envelope";
  std::string kind = error.substr(at + 7);
  // An unknown key is a name the client wrote, not a value: keep it.
  if (kind.rfind("unknown field: ", 0) == 0) return error;
  if (const auto colon = kind.find(':'); colon != std::string::npos) {
    kind = kind.substr(0, colon) + " (the value is not repeated here; see the line and column)";
  }
  return error.substr(0, at + 7) + kind;
}

bool StartsWithNoCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

// Message ids are the broker's idempotency keys, opaque tokens of
// wire::kMessageIdFormat (the broker refuses any other).
bool ValidId(std::string_view id) { return wire::IsValidMessageId(id); }

// The value of `name` in a query string; nullopt when absent.
std::optional<std::string_view> QueryValue(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<uint64_t> ParseUint(std::string_view text) {
  uint64_t value = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || p != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

namespace {

// Below /v1/inbox/: "{sender}/{id}", "{sender}/{id}/ack", or the older
// "{id}/ack" (so "x/ack" is the older form, for the id x).
Route ClassifyInboxItem(std::string_view rest, Route r) {
  constexpr std::string_view kAck = "/ack";
  const bool ack = rest.size() > kAck.size() && rest.ends_with(kAck);
  if (ack) rest.remove_suffix(kAck.size());
  const auto slash = rest.find('/');
  std::string_view raw_sender, raw_id = rest;
  if (slash != std::string_view::npos) {
    raw_sender = rest.substr(0, slash);
    raw_id = rest.substr(slash + 1);
    if (raw_id.find('/') != std::string_view::npos) return r;  // not a resource: 404
  } else if (!ack) {
    return r;
  }
  r.kind = ack ? Route::Kind::kAck : Route::Kind::kInboxMessage;
  r.name = !ack ? "/v1/inbox/{sender}/{id}" : slash == std::string_view::npos ? "/v1/inbox/{id}/ack"
                                                                                : "/v1/inbox/{sender}/{id}/ack";
  auto id = PercentDecode(raw_id);
  auto sender = PercentDecode(raw_sender);
  r.id = id.value_or("");
  r.sender = sender.value_or("");
  r.id_ok = id && sender && ValidId(r.id) && (slash == std::string_view::npos || ValidId(r.sender));
  return r;
}

}  // namespace

Route Classify(std::string_view target) {
  Route r;
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  if (question != std::string_view::npos) r.query = target.substr(question + 1);
  constexpr std::string_view kMessages = "/v1/messages/", kInbox = "/v1/inbox/";
  constexpr std::string_view kReceipt = "/receipt";
  std::string_view raw_id;
  bool has_id = false;
  if (path == "/healthz") {
    r.kind = Route::Kind::kHealth;
    r.name = "/healthz";
  } else if (path == "/v1/messages") {
    r.kind = Route::Kind::kMessages;
    r.name = "/v1/messages";
  } else if (path == "/v1/inbox") {
    r.kind = Route::Kind::kInbox;
    r.name = "/v1/inbox";
  } else if (path.size() > kMessages.size() + kReceipt.size() && path.starts_with(kMessages) &&
             path.ends_with(kReceipt)) {
    r.kind = Route::Kind::kReceipt;
    r.name = "/v1/messages/{id}/receipt";
    raw_id = path.substr(kMessages.size(), path.size() - kMessages.size() - kReceipt.size());
    has_id = true;
  } else if (path.size() > kInbox.size() && path.starts_with(kInbox)) {
    return ClassifyInboxItem(path.substr(kInbox.size()), r);
  }
  if (has_id) {
    auto decoded = PercentDecode(raw_id);
    r.id = decoded.value_or("");
    r.id_ok = decoded.has_value() && ValidId(r.id);
  }
  return r;
}

StatusOr<PreparedMessage> PrepareMessage(const wire::JsonCodec& codec, std::string_view body) {
  auto binary = codec.ToBinary(body, "request body");
  if (!binary.ok()) {
    return Status::InvalidArgument(WithoutValues(binary.status().message()) +
                                   " (the body must be an Envelope in JSON form; see docs/openapi.yaml)");
  }
  PreparedMessage out;
  // What the client sent decides whether a resend is a retry: digest it
  // before the gateway fills anything in.
  out.digest = Sha256Hex(std::string_view(reinterpret_cast<const char*>(binary->data()), binary->size()));
  std::unique_ptr<wire::EnvelopeT> envelope(wire::GetEnvelope(binary->data())->UnPack());
  if (envelope->id.empty()) envelope->id = wire::NewMessageId();
  if (envelope->created_at.empty()) envelope->created_at = wire::NowRfc3339();
  if (!ValidId(envelope->id)) {
    return Status::InvalidArgument("id: must match " + std::string(wire::kMessageIdFormat) +
                                   " (an opaque token such as a ULID, never personal data); "
                                   "leave it out to get a ULID");
  }
  flatbuffers::FlatBufferBuilder fbb(binary->size() + 256);
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, envelope.get()));
  out.id = envelope->id;
  out.envelope.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  return out;
}

}  // namespace liaison::gateway
