// The gateway's request handling that needs no network, store or broker:
// routing a target, reading ids and query values, and turning a POST
// /v1/messages body into the Envelope the gateway keeps. Pure functions, so
// that the unit tests and the fuzzer (tests/fuzz/fuzz_gateway_request.cc)
// drive them directly.
#ifndef LIAISON_AGENTS_GATEWAY_REQUEST_H_
#define LIAISON_AGENTS_GATEWAY_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "liaison/status.h"
#include "liaison/wire.h"

namespace liaison::gateway {

struct Route {
  enum class Kind { kHealth, kMessages, kReceipt, kInbox, kInboxMessage, kAck, kNotFound };
  Kind kind = Kind::kNotFound;
  const char* name = "other";  // the route template, for logs
  std::string id;              // kReceipt, kInboxMessage, kAck: the decoded message id
  // kInboxMessage, kAck: the decoded sender (agency id). Empty for the older
  // /v1/inbox/{id}/ack, which names the id alone.
  std::string sender;
  bool id_ok = false;          // id (and sender, if given) decode and are valid
  std::string_view query;      // after '?', into the target given
};
// Routes a request target ("/v1/messages/ID/receipt?x=y"). A received
// message is named by (sender, id): ids are unique per sender only.
Route Classify(std::string_view target);

struct PreparedMessage {
  std::string id;                 // as given, or a new ULID
  std::string digest;             // SHA-256 (hex) of what the client sent, before filling in
  std::vector<uint8_t> envelope;  // the verified Envelope to keep and send
};
// Parses a POST /v1/messages body with `codec` (an Envelope codec), fills in
// id and created_at when absent. InvalidArgument says where and what, never
// quoting a value; a message starting "id:" is about the id.
StatusOr<PreparedMessage> PrepareMessage(const wire::JsonCodec& codec, std::string_view body);

std::string Sha256Hex(std::string_view data);
std::optional<std::string> PercentDecode(std::string_view in);  // nullopt: malformed escape
std::string PercentEncode(std::string_view in);
// A parser error without the value it quotes (keeps file:line: col: kind).
std::string WithoutValues(const std::string& error);
bool StartsWithNoCase(std::string_view text, std::string_view prefix);
// An opaque message id of wire::kMessageIdFormat.
bool ValidId(std::string_view id);
std::optional<std::string_view> QueryValue(std::string_view query, std::string_view name);
std::optional<uint64_t> ParseUint(std::string_view text);

}  // namespace liaison::gateway

#endif  // LIAISON_AGENTS_GATEWAY_REQUEST_H_
