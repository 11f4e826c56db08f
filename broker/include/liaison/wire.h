// The wire contract in C++: frame commands, buffer verification, and the one
// JSON <-> FlatBuffers conversion (FlatBuffers' own schema-driven parser and
// printer over the binary schemas embedded at build time).
//
// Frame layout and the meaning of each command: docs/protocol.md.
#ifndef LIAISON_WIRE_H_
#define LIAISON_WIRE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "liaison/status.h"
#include "liaison/wire/bench_generated.h"
#include "liaison/wire/control_generated.h"
#include "liaison/wire/envelope_generated.h"
#include "liaison/wire/explain_generated.h"
#include "liaison/wire/gateway_generated.h"
#include "liaison/wire/ledger_generated.h"

namespace reflection {
struct Schema;
}
namespace flatbuffers {
class Parser;
}

namespace liaison::wire {

// Frame 0 of every multipart message names the command.
inline constexpr std::string_view kHello = "HELLO";      // agent -> broker: Hello
inline constexpr std::string_view kSend = "SEND";        // agent -> broker: Envelope
inline constexpr std::string_view kAck = "ACK";          // agent -> broker: Ack
inline constexpr std::string_view kWelcome = "WELCOME";  // broker -> agent: Welcome
inline constexpr std::string_view kReceipt = "RECEIPT";  // broker -> agent: Receipt
inline constexpr std::string_view kDeliver = "DELIVER";  // broker -> agent: Envelope
inline constexpr std::string_view kNotice = "NOTICE";    // broker -> agent: Receipt (delivered / expired)

inline constexpr uint16_t kSchemaVersion = 1;

// Verifies `bytes` as an Envelope (file identifier "LSNE") or a Receipt
// ("LSNR"), or an Ack / Hello / Welcome (no identifier). Returns nullptr
// if the buffer is not a valid FlatBuffer of that type. The result points
// into `bytes`.
// VerifyEnvelope also refuses an Envelope that expands past kMaxExpansion
// times its own size (see VerifyEnvelopeWithin).
const Envelope* VerifyEnvelope(std::span<const uint8_t> bytes);
const Receipt* VerifyReceipt(std::span<const uint8_t> bytes);
const Ack* VerifyAck(std::span<const uint8_t> bytes);
const Hello* VerifyHello(std::span<const uint8_t> bytes);
const Welcome* VerifyWelcome(std::span<const uint8_t> bytes);

// What an Envelope's bytes amount to once every reference in them is
// followed. FlatBuffers may reference one string, vector or table from
// several places (shared offsets are legal), and whatever copies or walks
// the message (the rewrite for each recipient, the verifier itself) does so
// once per reference: 240 KB of bytes can stand for gigabytes. The expanded
// size counts each table's inline part, each vector and each string once
// per reference; for a buffer without shared offsets it is at most its size.
struct EnvelopeCheck {
  const Envelope* envelope = nullptr;  // set only if valid and within the budget
  bool too_large = false;              // the expanded size passed the budget
  size_t expanded = 0;                 // bytes counted (stops just past the budget)
  // With `envelope`: the path ("payload.subject.given_name", "to[1].kind") of
  // the first string that is not valid UTF-8, empty if all are. The
  // FlatBuffers verifier does not look inside strings; JSON cannot carry
  // them. Found by the same walk, so a message's text is read once.
  std::string non_utf8_field;
};

// Verifies `bytes` as an Envelope whose expanded size is at most
// `max_expanded`. Every object is checked (with the FlatBuffers verifier's
// own bounds checks) before it is read, and the walk stops as soon as the
// budget is spent, so its cost is bounded by `max_expanded` whatever the
// sharing; only then does the full generated verifier run.
EnvelopeCheck VerifyEnvelopeWithin(std::span<const uint8_t> bytes, size_t max_expanded);

// How far sharing may stretch a message: its expanded size may be at most
// this many times its size. VerifyEnvelope applies it; the broker also
// applies its limits.max_message_bytes.
inline constexpr size_t kMaxExpansion = 4;

// FlatBuffers must be read from 8-byte aligned memory; a ZeroMQ frame's data
// need not be (small frames live inside the message struct). Returns `bytes`
// if aligned, else a copy held in `storage`.
std::span<const uint8_t> Aligned(std::span<const uint8_t> bytes, std::vector<uint8_t>& storage);

// The binary schemas (.bfbs) this build was made with.
const reflection::Schema& EnvelopeSchema();
const reflection::Schema& ControlSchema();

// Converts between JSON (the human form of every message) and FlatBuffers,
// for one root table. Not thread-safe: the parser keeps state; use one codec
// per thread. Construction deserialises the embedded schema (cheap, but not
// for the per-message path).
class JsonCodec {
 public:
  enum class Root {
    kEnvelope,
    kReceipt,
    kAck,
    kLedgerRecord,
    // The HTTPS gateway's replies (schemas/gateway.fbs).
    kGatewayAccepted,
    kGatewayPending,
    kGatewayInboxPage,
    kGatewayAcked,
    kGatewayProblem,
    kGatewayHealth,
    // `make bench`'s results (schemas/bench.fbs).
    kBenchReport,
    // `liaison policy explain --json` (schemas/explain.fbs).
    kPolicyExplanation,
  };
  explicit JsonCodec(Root root);
  ~JsonCodec();
  JsonCodec(const JsonCodec&) = delete;
  JsonCodec& operator=(const JsonCodec&) = delete;

  // Parses JSON into a verified FlatBuffer. On error the message names the
  // source, the line and the field (e.g. "referral.json:7: unknown field:
  // subjekt"). `source_name` is used only for messages.
  StatusOr<std::vector<uint8_t>> ToBinary(std::string_view json,
                                          std::string_view source_name) const;

  // Prints a FlatBuffer as JSON after verifying it. `pretty` indents; else
  // the JSON is one line.
  StatusOr<std::string> ToJson(std::span<const uint8_t> bytes, bool pretty) const;

 private:
  void Init() const;  // (re)creates parser_ for root_
  Root root_;
  mutable std::unique_ptr<flatbuffers::Parser> parser_;
};

// True if `text` is well-formed UTF-8 (no overlong forms, surrogates or
// code points above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// Current UTC time as RFC 3339 with milliseconds ("2026-11-24T09:30:00.123Z").
std::string NowRfc3339();
// The same for a time in milliseconds since the epoch.
std::string Rfc3339(int64_t unix_ms);

// Milliseconds since the epoch of an RFC 3339 date-time,
// YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), the fraction (up to 9
// digits) cut to milliseconds; nullopt if malformed or out of range (month
// 13, February 30, hour 24, an offset of a day or more). The one parser of
// times in liaison (Howard Hinnant's date library); leap seconds (:60) are
// refused, as std::chrono has none.
std::optional<int64_t> ParseRfc3339Millis(std::string_view text);

// A new message id: a ULID (26 characters, Crockford base32, time-ordered).
std::string NewMessageId();

// Message ids are opaque tokens of kMessageIdFormat (ULIDs and UUIDs fit):
// they reach logs and the ledger, which cannot be erased, so they must not
// be able to carry a name or any other personal data (docs/protocol.md).
inline constexpr std::string_view kMessageIdFormat = "[A-Za-z0-9._-]{1,64}";
inline constexpr size_t kMaxMessageIdBytes = 64;
bool IsValidMessageId(std::string_view id);
// `id` for a log line: itself if valid, else "-" (an invalid id is never
// logged, whatever it holds).
std::string_view LoggableMessageId(std::string_view id);

}  // namespace liaison::wire

#endif  // LIAISON_WIRE_H_
