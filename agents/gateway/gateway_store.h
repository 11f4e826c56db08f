// What the gateway keeps on disk (SQLite, WAL, synchronous=FULL): messages
// the agency's system handed over (POST /v1/messages) until the broker has
// answered them, then their receipts and the delivered/expired notices that
// follow, for GET /v1/messages/{id}/receipt.
//
// A message's bytes are deleted as soon as the broker has answered, with
// secure_delete and a WAL truncation, so that none of them stays on disk;
// only the receipt (names of rules and fields, never values) stays, for
// keep_receipts_days. The file and its -wal and -shm are mode 0600.
//
// Until then a message is sealed under a key of its case (the envelope's
// case_ref; liaison/case_vault.h), wrapped under a ring whose KEK the
// gateway state key (gateway.yaml state_key_file) seals. An ErasureRequest
// the broker accepted, or one handed to the agency's system, destroys that
// case's key: a backup of the file taken before no longer opens the case.
//
// Thread-safe: one connection behind a mutex (the HTTP thread accepts and
// reads, the sender thread sends and answers).
#ifndef LIAISON_AGENTS_GATEWAY_GATEWAY_STORE_H_
#define LIAISON_AGENTS_GATEWAY_GATEWAY_STORE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "liaison/case_vault.h"
#include "liaison/status.h"

struct sqlite3;

namespace liaison::gateway {

class GatewayStore {
 public:
  // Opens or creates the file, with its key at `key_file` (made, with its
  // ring beside it, at first use). Fails with the path and SQLite's reason,
  // or if the key or the ring is not this file's.
  static StatusOr<std::unique_ptr<GatewayStore>> Open(const std::string& path, const std::string& key_file);
  ~GatewayStore();

  enum class Accepted { kNew, kDuplicate, kConflict };
  // Keeps `envelope` under `id`, durably on return. `digest` identifies what
  // the client sent: the same id with the same digest is a retry
  // (kDuplicate, nothing stored); with another digest, kConflict.
  StatusOr<Accepted> Accept(const std::string& id, const std::string& digest,
                            std::span<const uint8_t> envelope);

  struct Outgoing {
    std::string id;
    std::vector<uint8_t> envelope;
  };
  // The oldest message the broker has not answered yet. One whose case was
  // erased since it was accepted (a restored backup) no longer opens: it is
  // answered with no receipt and skipped.
  StatusOr<std::optional<Outgoing>> NextPending();
  StatusOr<uint64_t> PendingCount();

  // The messages waiting for the broker, oldest first, and how many of them
  // no longer open (their case was erased). For tools and tests: what a
  // copy of the file still reveals.
  struct PendingContents {
    std::vector<Outgoing> messages;
    int64_t shredded = 0;
  };
  StatusOr<PendingContents> Pending();

  // Records the broker's receipt for `id` and deletes the message's bytes.
  // An ErasureRequest whose receipt says `ok` (the broker took it and
  // forwards it) shreds its case (ShredCase), keeping the case's messages
  // accepted after it under a new key.
  Status Answer(const std::string& id, std::span<const uint8_t> receipt);
  // Destroys the key of `sender`'s case `case_ref` ("" = this agency's own)
  // and deletes the case's pending messages.
  Status ShredCase(const std::string& sender, const std::string& case_ref);
  // Records a later Receipt (delivered / expired) about `id` for `recipient`.
  Status AddNotice(const std::string& id, const std::string& recipient,
                   std::span<const uint8_t> receipt);

  struct Entry {
    std::vector<uint8_t> receipt;  // empty while pending
    std::vector<std::vector<uint8_t>> notices;
  };
  // nullopt for an id the gateway never accepted (or has purged).
  StatusOr<std::optional<Entry>> Lookup(const std::string& id);

  // Removes answered messages (and their notices) answered before `before_ms`.
  StatusOr<int> Purge(int64_t before_ms);

  // Webhook deliveries that failed webhook.max_attempts times
  // (docs/operations.md): the message stays unacked with the broker; this
  // records which, and why, without a value from the message.
  struct DeadLetter {
    std::string sender, id;
    int64_t attempts = 0;
    int last_status = 0;     // HTTP status of the last attempt; 0 when none
    std::string last_error;  // transport error of the last attempt, or empty
  };
  Status AddDeadLetter(const DeadLetter& letter);  // replaces an earlier record
  Status RemoveDeadLetter(const std::string& sender, const std::string& id);
  StatusOr<std::vector<DeadLetter>> DeadLetters();  // oldest first

 private:
  GatewayStore() = default;
  // Truncates the WAL after a message's bytes were deleted, so that no copy
  // of them stays on disk. Called with mu_ held.
  Status Scrub();
  // Inside a vault transaction, with mu_ held.
  Status ShredLocked(const std::string& sender, const std::string& case_ref, int64_t keep_after);
  std::mutex mu_;
  sqlite3* db_ = nullptr;
  std::string path_;
  std::unique_ptr<CaseVault> vault_;
};

}  // namespace liaison::gateway

#endif  // LIAISON_AGENTS_GATEWAY_GATEWAY_STORE_H_
