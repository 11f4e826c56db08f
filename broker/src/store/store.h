// The broker's durable store (SQLite, WAL, synchronous=FULL): one row per
// (message, recipient) holding the policy-rewritten message encrypted with
// AES-256-GCM, the original receipt of every message (to answer resends),
// which agencies received data of which case (for erasure), and the notices
// (delivered / expired) owed to senders.
//
// Not thread-safe: one thread uses one Store. The broker opens the file
// twice: the writer thread applies each batch (Apply: one transaction, one
// fsync), and the core's thread reads through its own Store, seeing only
// what is committed. A message is acknowledged as stored only after its
// batch's Apply returned. (Begin/Commit and the single writes are kept for
// tools and tests.)
#ifndef LIAISON_BROKER_STORE_STORE_H_
#define LIAISON_BROKER_STORE_STORE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
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
  std::string label;              // what the caller attached at Enqueue
};

struct ExpiredMessage {
  std::string sender, message_id, recipient;
  std::string label;  // what the caller attached at Enqueue
  int64_t seq = 0;
};

// Everything one batch decided, written by Store::Apply in one transaction
// with one fsync: all of it is durable, or none of it. Plain data, built by
// the broker core on its thread and applied on the writer's.
struct WriteBatch {
  struct Copy {
    std::string sender, message_id, recipient, case_ref, label;
    std::vector<uint8_t> envelope;  // plaintext; sealed by Apply
    int64_t now_ms = 0, expires_ms = 0, purge_after_ms = 0;
  };
  struct Receipt {
    std::string sender, message_id;
    std::vector<uint8_t> receipt;
    int64_t purge_after_ms = 0;
  };
  struct Acked {
    std::string recipient;
    int64_t seq = 0;
    int64_t now_ms = 0;
  };
  std::vector<Copy> copies;             // queued, each with its disclosure
  std::vector<Receipt> receipts;        // kept to answer resends
  std::vector<Acked> acks;              // queued copies delivered
  std::vector<int64_t> expired;         // queued copies past their expiry
  std::vector<int64_t> erased;          // queued copies of a withdrawn case
  std::vector<int64_t> set_aside;       // queued copies that do not decrypt
  std::vector<int64_t> purged;          // set-aside copies an operator deletes
  std::vector<int64_t> requeued;        // set-aside copies an operator puts back in the queue
  std::vector<std::pair<std::string, std::vector<uint8_t>>> notices;  // (agency, receipt)
  std::vector<int64_t> notices_sent;    // notices to forget
  std::vector<std::pair<uint64_t, std::string>> ledger;  // see AppendLedger
  uint64_t trim_ledger_to = 0;          // see TrimLedger (0: nothing)
  int64_t purge_before_ms = 0;          // see PurgeDue (0: nothing)

  bool empty() const {
    return copies.empty() && receipts.empty() && acks.empty() && expired.empty() && erased.empty() &&
           set_aside.empty() && purged.empty() && requeued.empty() && notices.empty() && notices_sent.empty() && ledger.empty() &&
           trim_ledger_to == 0 && purge_before_ms == 0;
  }
};

struct AckedMessage {
  std::string sender;
  std::string label;
};

struct Notice {
  int64_t seq = 0;
  std::vector<uint8_t> receipt;
};

// The ledger records the store holds (see AppendLedger).
struct LedgerTail {
  // The last record committed with a batch; nullopt if no batch ever
  // committed one (a new store, or one of a broker that wrote its ledger
  // file only): the ledger file is then the whole truth.
  std::optional<uint64_t> committed_seq;
  // (seq, line) of the records not yet known to be durable in the ledger
  // file, in order.
  std::vector<std::pair<uint64_t, std::string>> lines;
};

// One recipient's queue, for operators (liaison status / queues).
struct QueueSummary {
  std::string recipient;
  int64_t queued = 0;             // waiting for delivery or its ack
  int64_t oldest_created_ms = 0;  // of the queued ones (0: none)
  int64_t set_aside = 0;          // do not decrypt; kept for an operator to purge or requeue
};

// One stored copy, for operators: names and times only, never contents.
struct QueueEntry {
  int64_t seq = 0;
  std::string sender, message_id, type;  // type: the payload's, from the copy's label
  bool set_aside = false;
  int64_t created_ms = 0;
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

  // Writes `batch` in one transaction and commits it (durable on return).
  // On failure nothing of it is stored. Must not be called inside Begin().
  Status Apply(const WriteBatch& batch);

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

  // Queued messages of `recipient` with seq > after_seq, in order. Reads
  // only. A message that does not decrypt is logged and skipped, and its seq
  // added to `damaged` (if given) for the caller to set aside
  // (WriteBatch::set_aside); without `damaged` it is set aside at once.
  StatusOr<std::vector<QueuedMessage>> Pending(const std::string& recipient, int64_t after_seq,
                                               int limit, std::vector<int64_t>* damaged = nullptr);
  // Queued messages past their expiry (reads only).
  StatusOr<std::vector<ExpiredMessage>> Due(int64_t now_ms);
  // Queued messages of `sender`'s case (reads only).
  StatusOr<std::vector<ExpiredMessage>> QueuedOfCase(const std::string& sender, const std::string& case_ref);
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

  // The ledger's records commit with the batch that decided them: the
  // (seq, line) records the ledger wrote to its file for this batch
  // (audit::Ledger::Write), and the position they reach. A broker that
  // stops anywhere finds in the store which records are committed, and the
  // ledger file is cut or completed to match (audit::Ledger::Open).
  Status AppendLedger(const std::vector<std::pair<uint64_t, std::string>>& lines);
  // Forgets the records up to `up_to_seq`, once they are durable in the
  // ledger file (audit::Ledger::Sync). The committed position stays.
  Status TrimLedger(uint64_t up_to_seq);
  StatusOr<LedgerTail> ReadLedgerTail();

  // For operators (reads only): every recipient with queued or set-aside
  // copies, by recipient id.
  StatusOr<std::vector<QueueSummary>> QueueSummaries();
  // The queued and set-aside copies of `recipient`, oldest first, at most
  // `limit`.
  StatusOr<std::vector<QueueEntry>> QueueEntries(const std::string& recipient, int limit);
  // The set-aside copies of `recipient`, oldest first (reads only).
  StatusOr<std::vector<ExpiredMessage>> SetAside(const std::string& recipient);

  // An online, consistent copy of the database at `source` into the new
  // file `destination` (owner-only), through SQLite's backup API on a
  // connection of its own: a snapshot of one committed state, taken while
  // the broker keeps committing. The copy is integrity-checked. Fails if
  // `destination` exists.
  static Status Backup(const std::string& source, const std::string& destination);

  Status AddNotice(const std::string& agency, const std::vector<uint8_t>& receipt);
  StatusOr<std::vector<Notice>> Notices(const std::string& agency, int limit);
  Status DeleteNotice(int64_t seq);

 private:
  Store() = default;
  Status Exec(const char* sql);
  sqlite3_stmt* Prepare(const char* sql);
  std::string CaseHash(const std::string& sender, const std::string& case_ref) const;
  Status CheckKey();
  // Deletes the sealed copy of message `seq` (delivered, expired, erased).
  Status DropBody(int64_t seq);

  sqlite3* db_ = nullptr;
  StoreKey key_{};
  std::string path_;
  bool in_transaction_ = false;
  std::unordered_map<const char*, sqlite3_stmt*> statements_;  // by SQL text address
};

}  // namespace liaison::store

#endif  // LIAISON_BROKER_STORE_STORE_H_
