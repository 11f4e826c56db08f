// The broker's durable store (SQLite, WAL, synchronous=FULL): one row per
// (message, recipient) holding the policy-rewritten message encrypted with
// AES-256-GCM, the original receipt of every message (to answer resends),
// which agencies received data of which case (for erasure), and the notices
// (delivered / expired) owed to senders.
//
// Not thread-safe: the reactor thread owns it. Writes happen inside a
// transaction that the caller opens with Begin() and ends with Commit(): the
// reactor commits once per batch of messages (group commit), and a message is
// acknowledged as stored only after that commit returned.
#ifndef LIAISON_BROKER_STORE_STORE_H_
#define LIAISON_BROKER_STORE_STORE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "liaison/keys.h"
#include "liaison/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace liaison::store {

// The AES-256-GCM key of the rows at rest; its file: LoadStoreKey in
// liaison/keys.h.
using StoreKey = SecretKey32;

struct QueuedMessage {
  int64_t seq = 0;              // global order; per recipient it is the delivery order
  std::string sender;
  std::string message_id;
  std::vector<uint8_t> envelope;  // decrypted
};

struct ExpiredMessage {
  std::string sender, message_id, recipient;
  std::string label;  // what the caller attached at Enqueue
};

struct AckedMessage {
  std::string sender;
  std::string label;
};

struct Notice {
  int64_t seq = 0;
  std::vector<uint8_t> receipt;
};

class Store {
 public:
  // Opens (creating if needed) the database at `path`. Fails with a clear
  // message on a corrupt file, a wrong key, or an unwritable location.
  // `max_value_bytes` (0: SQLite's default) caps any one stored value: a
  // larger one fails its write (and so its batch) instead of being stored.
  static StatusOr<std::unique_ptr<Store>> Open(const std::string& path, const StoreKey& key,
                                               size_t max_value_bytes = 0);
  ~Store();

  Status Begin();
  // Durable on return (fsync of the WAL). On failure the transaction is
  // rolled back and nothing of it is stored.
  Status Commit();
  void Rollback();
  bool in_transaction() const { return in_transaction_; }

  // The receipt first given for (sender, id), if any.
  StatusOr<std::optional<std::vector<uint8_t>>> FindReceipt(const std::string& sender,
                                                           const std::string& message_id);
  Status PutReceipt(const std::string& sender, const std::string& message_id,
                    const std::vector<uint8_t>& receipt, int64_t purge_after_ms);

  // Queues `envelope` for `recipient`; records the disclosure of the case.
  // `label` is an opaque, non-personal note returned with the message's
  // later events (the broker keeps the ledger's case pseudonym and type).
  Status Enqueue(const std::string& sender, const std::string& message_id,
                 const std::string& recipient, const std::string& case_ref,
                 const uint8_t* envelope, size_t size, int64_t now_ms, int64_t expires_ms,
                 int64_t purge_after_ms, const std::string& label = "");

  // Queued messages of `recipient` with seq > after_seq, in order.
  StatusOr<std::vector<QueuedMessage>> Pending(const std::string& recipient, int64_t after_seq,
                                               int limit);
  // Marks the queued message `seq` of `recipient` acknowledged; returns its
  // sender and label, or nullopt if it was not queued (acked, expired, erased).
  StatusOr<std::optional<AckedMessage>> Ack(const std::string& recipient, int64_t seq, int64_t now_ms);
  // Queued messages past their expiry become expired; returns them.
  StatusOr<std::vector<ExpiredMessage>> ExpireDue(int64_t now_ms);
  // Deletes acknowledged and expired messages, and receipts, past retention.
  StatusOr<int64_t> PurgeDue(int64_t now_ms);
  // Number of queued messages per recipient.
  StatusOr<std::unordered_map<std::string, int64_t>> QueueDepths();

  // Agencies that were sent data of `case_ref` by `sender`.
  StatusOr<std::vector<std::string>> Disclosures(const std::string& sender, const std::string& case_ref);
  // Removes the queued (undelivered) messages of the case; returns them.
  StatusOr<std::vector<ExpiredMessage>> EraseQueued(const std::string& sender, const std::string& case_ref);

  Status AddNotice(const std::string& agency, const std::vector<uint8_t>& receipt);
  StatusOr<std::vector<Notice>> Notices(const std::string& agency, int limit);
  Status DeleteNotice(int64_t seq);

 private:
  Store() = default;
  Status Exec(const char* sql);
  sqlite3_stmt* Prepare(const char* sql);
  std::string CaseHash(const std::string& sender, const std::string& case_ref) const;
  Status CheckKey();

  sqlite3* db_ = nullptr;
  StoreKey key_{};
  std::string path_;
  bool in_transaction_ = false;
  std::unordered_map<const char*, sqlite3_stmt*> statements_;  // by SQL text address
};

}  // namespace liaison::store

#endif  // LIAISON_BROKER_STORE_STORE_H_
