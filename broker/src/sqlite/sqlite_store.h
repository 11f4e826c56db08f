// The embedded storage backend: one SQLite file in WAL mode with
// synchronous=FULL, so that a commit is on disk when it returns. Tables:
// messages (one small row per queued copy), bodies (its sealed bytes, apart,
// dropped at ack, expiry and erasure), receipts, disclosures, notices, and
// ledger_tail (each batch's ledger lines until the ledger file holds them).
//
// Besides the core's interface (store::Store), it keeps the single writes
// that Apply is made of (Begin/Commit and the rest) for tools and tests, and
// the online backup of a live file.
#ifndef LIAISON_BROKER_SQLITE_SQLITE_STORE_H_
#define LIAISON_BROKER_SQLITE_SQLITE_STORE_H_

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/case_keys.h"
#include "store/rows.h"
#include "store/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace liaison::store {

class Checkpointer;

class SqliteStore final : public Store {
 public:
  // Opens (creating if needed) the database at `path`, owner-only. Fails
  // with a clear message on a corrupt file, a wrong key, or an unwritable
  // location. `max_value_bytes` (0: SQLite's default) caps any one stored
  // value: a larger one fails its write (and so its batch) instead of being
  // stored.
  //
  // With `background_checkpoints` (the broker's writer connection), the
  // WAL's pages are copied into the database file by a thread and
  // connection of the store's own instead of inside the commit that fills
  // the WAL (SQLite's default): a commit then never waits for that copy and
  // its fsync, which otherwise hold one batch's receipts for tens of
  // milliseconds about twice a second under load.
  //
  // With `ring` (the broker's connections), copies are sealed under their
  // case's key (store/case_keys.h) and a WriteBatch's shreds destroy keys;
  // without it, copies are sealed under the store key and case-keyed copies
  // do not open (tools that only move or list rows).
  static StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path, const StoreKey& key,
                                                     size_t max_value_bytes = 0,
                                                     bool background_checkpoints = false,
                                                     std::shared_ptr<CaseKeyRing> ring = nullptr);
  ~SqliteStore() override;

  // store::Store. Apply must not be called inside Begin().
  Status Apply(const WriteBatch& batch, std::vector<int64_t>* seqs) override;
  using Store::Apply;
  StatusOr<size_t> ScanReceiptKeys(ReceiptKeyCursor* after, size_t limit, const ReceiptKeyVisitor& each) override;
  StatusOr<std::optional<std::vector<uint8_t>>> FindReceipt(const std::string& sender,
                                                           const std::string& message_id) override;
  // Without `damaged`, a copy that does not decrypt is set aside at once.
  StatusOr<std::vector<QueuedMessage>> Pending(const std::string& recipient, int64_t after_seq, int limit,
                                               std::vector<int64_t>* damaged = nullptr) override;
  StatusOr<std::vector<ExpiredMessage>> Due(int64_t now_ms) override;
  StatusOr<std::vector<ExpiredMessage>> QueuedOfCase(const std::string& sender,
                                                     const std::string& case_ref) override;
  StatusOr<std::unordered_map<std::string, int64_t>> QueueDepths() override;
  StatusOr<std::vector<std::string>> Disclosures(const std::string& sender, const std::string& case_ref) override;
  StatusOr<std::vector<Notice>> Notices(const std::string& agency, int limit) override;
  StatusOr<LedgerTail> ReadLedgerTail() override;
  StatusOr<std::vector<Clock>> DueClocks(int64_t now_ms, int limit) override;
  StatusOr<std::optional<int64_t>> OldestOpenClock() override;
  StatusOr<std::optional<Thread>> FindThread(const std::string& ref) override;
  StatusOr<std::vector<QueueSummary>> QueueSummaries() override;
  StatusOr<std::vector<QueueEntry>> QueueEntries(const std::string& recipient, int limit) override;
  StatusOr<std::vector<ExpiredMessage>> SetAside(const std::string& recipient) override;

  // An online, consistent copy of the database at `source` into the new
  // file `destination` (owner-only), through SQLite's backup API on a
  // connection of its own: a snapshot of one committed state, taken while
  // the broker keeps committing. The copy is integrity-checked. Fails if
  // `destination` exists.
  static Status Backup(const std::string& source, const std::string& destination);

  // For `liaison store migrate`: every row of the store at `path`, handed
  // to `sink` in parts of about `part_rows` rows, and the totals to check
  // the copy against. The store must not be in use: it is opened with an
  // exclusive lock (held until the export returns), so a broker that has it
  // open makes the export fail, and one starting meanwhile cannot open it.
  // `key` must be the store's key (its key check). A table or meta row this
  // build does not know is refused rather than left behind.
  static StatusOr<StoreTotals> Export(const std::string& path, const StoreKey& key, RowSink* sink,
                                      size_t part_rows = 1000);

  // The single writes Apply is made of, for tools and tests.
  Status Begin();
  // Durable on return (fsync of the WAL). On failure the transaction is
  // rolled back and nothing of it is stored.
  Status Commit();
  void Rollback();
  bool in_transaction() const { return in_transaction_; }
  Status PutReceipt(const std::string& sender, const std::string& message_id,
                    const std::vector<uint8_t>& receipt, int64_t purge_after_ms);
  // Queues `envelope` for `recipient`; records the disclosure of the case.
  // `label` is an opaque, non-personal note returned with the message's
  // later events (the broker keeps the ledger's case pseudonym and type).
  Status Enqueue(const std::string& sender, const std::string& message_id, const std::string& recipient,
                 const std::string& case_ref, const uint8_t* envelope, size_t size, int64_t now_ms,
                 int64_t expires_ms, int64_t purge_after_ms, const std::string& label = "",
                 bool case_keyed = true,
                 int64_t* seq = nullptr);  // the copy's seq; 0 if it was queued already
  // Destroys the key of `sender`'s case (if it has one) and moves the ring
  // to a new epoch (re-wrapping every other case key), inside the open
  // transaction; the old epoch's KEK goes at Commit. Without a ring: nothing.
  Status ShredCase(const std::string& sender, const std::string& case_ref);
  // Marks the queued message `seq` of `recipient` acknowledged; returns its
  // sender and label, or nullopt if it was not queued (acked, expired, erased).
  StatusOr<std::optional<AckedMessage>> Ack(const std::string& recipient, int64_t seq, int64_t now_ms);
  // Queued messages past their expiry become expired; returns them.
  StatusOr<std::vector<ExpiredMessage>> ExpireDue(int64_t now_ms);
  // Deletes acknowledged and expired messages, and receipts, past retention.
  StatusOr<int64_t> PurgeDue(int64_t now_ms);
  // The batch's clocks: started, answered, fired (WriteBatch).
  Status ApplyClocks(const WriteBatch& batch);
  // The batch's thread references (WriteBatch::threads).
  Status ApplyThreads(const WriteBatch& batch);
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
  Status AddNotice(const std::string& agency, const std::vector<uint8_t>& receipt);
  Status DeleteNotice(int64_t seq);

 private:
  SqliteStore() = default;
  Status Exec(const char* sql);
  sqlite3_stmt* Prepare(const char* sql);
  Status CheckKey();
  // The case-key ring against the store's epoch and check (meta), at open;
  // SettleRing at a writer's first transaction (CaseKeyRing::Settle).
  Status CheckRing();
  Status SettleRing();
  // A store older than its ring (a restored backup) takes the ring's keys.
  Status AdoptRing(uint64_t store_epoch);
  StatusOr<std::optional<std::pair<uint64_t, std::vector<uint8_t>>>> ReadKekMeta();
  Status WriteKekMeta(uint64_t epoch, const SecretKey32& kek);
  // Deletes the sealed copy of message `seq` (delivered, expired, erased).
  Status DropBody(int64_t seq);
  // The key of (sender, case hash), made and stored (wrapped) if it has
  // none yet; inside the open transaction.
  StatusOr<CaseKey> CaseKeyFor(const std::string& sender, const std::string& case_hash);
  // Deletes the keys of cases with no message rows left (retention expiry).
  StatusOr<int64_t> ShredUnused();
  // Re-wraps every case key under a new epoch of the ring (staged; see
  // CaseKeyRing::Stage); the epoch is committed with the transaction.
  Status RotateRing();
  sqlite3* db_ = nullptr;
  StoreKey key_{};
  std::string path_;
  bool in_transaction_ = false;
  std::unordered_map<const char*, sqlite3_stmt*> statements_;  // by SQL text address
  std::unique_ptr<Checkpointer> checkpointer_;  // with background_checkpoints
  std::shared_ptr<CaseKeyRing> ring_;             // null: no case keys
  bool ring_settled_ = false;                     // Settle ran (at the first Apply)
  // The transaction's case keys (cleared at its end), and a rotation staged
  // in it (epoch 0: none), committed or abandoned with it.
  std::unordered_map<std::string, CaseKey> case_keys_;
  uint64_t staged_epoch_ = 0;
  bool shred_pending_ = false;  // a key was deleted: rotate before commit
};

}  // namespace liaison::store

#endif  // LIAISON_BROKER_SQLITE_SQLITE_STORE_H_
