// The PostgreSQL backend of the storage interface: the same state as the
// SQLite store (sqlite/sqlite_store.h), row for row, in a database that a
// synchronous standby can replicate. Each WriteBatch is one explicit
// transaction sent in libpq's pipeline mode (BEGIN, one prepared statement
// per write, COMMIT, one sync): one round trip per batch, and every result
// is checked before the batch counts as committed.
//
// The broker creates and migrates the schema (table schema_version); a
// database whose schema is newer than this build's is refused.
#ifndef LIAISON_BROKER_POSTGRES_PG_STORE_H_
#define LIAISON_BROKER_POSTGRES_PG_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/case_keys.h"
#include "store/rows.h"
#include "store/store.h"

struct pg_conn;

namespace liaison::store {

// Where and how to connect. `url` is a libpq connection URI or key=value
// string (TLS through sslmode, sslrootcert, ...); `password` (from
// store.password_file; empty: none, or the URL's) overrides one in the URL.
struct PgConnectOptions {
  std::string url;
  std::string password;
};

// The URL without secrets, for logs and errors: host, port and database.
std::string DescribePgUrl(const std::string& url);

// `text` with every occurrence of the password (options.password, and one
// written in options.url) replaced by ***: libpq's own messages may quote
// parts of the connection string.
std::string MaskPassword(std::string text, const PgConnectOptions& options);

class PgStore final : public Store {
 public:
  // The schema version this build writes (schema_version.version).
  static constexpr int kSchemaVersion = 10;

  // Connects, creates or migrates the schema, and checks that `key` is the
  // key the database's copies were sealed with. `max_value_bytes` (0: no
  // cap) caps any one stored value: a batch holding a larger one fails
  // whole, as in SqliteStore::Open.
  static StatusOr<std::unique_ptr<PgStore>> Open(const PgConnectOptions& options, const StoreKey& key,
                                                 size_t max_value_bytes = 0,
                                                 std::shared_ptr<CaseKeyRing> ring = nullptr);
  // For --check-config: connects and reads the schema version without
  // changing anything (0: no schema yet; Open creates it). A version newer
  // than kSchemaVersion is an error, as at Open.
  static StatusOr<int> ProbeSchemaVersion(const PgConnectOptions& options);

  // The SQL the store runs under `name` (e.g. "l_find_receipts"), or null
  // if it has none; `planned_each_time`: sent unprepared, planned with each
  // use's values, instead of prepared once. Tests examine the plans.
  static const char* StatementSql(const std::string& name, bool* planned_each_time = nullptr);

  ~PgStore() override;

  // store::Store. A lost connection is made again at the next call.
  Status Apply(const WriteBatch& batch, std::vector<int64_t>* seqs) override;
  using Store::Apply;
  StatusOr<size_t> ScanReceiptKeys(ReceiptKeyCursor* after, size_t limit, const ReceiptKeyVisitor& each) override;
  StatusOr<std::optional<std::vector<uint8_t>>> FindReceipt(const std::string& sender,
                                                           const std::string& message_id) override;
  // One round trip for all of them.
  StatusOr<std::vector<std::optional<std::vector<uint8_t>>>> FindReceipts(
      const std::vector<std::pair<std::string, std::string>>& keys) override;
  // One round trip for all of them, their grants included (FindThread
  // is this for one).
  StatusOr<std::vector<std::optional<Thread>>> FindThreads(const std::vector<std::string>& refs) override;
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

  // The lease that makes one of several brokers on this database the
  // active one (table lease; times by the database's clock, so the
  // brokers' clocks do not matter). The broker takes and renews
  // it through broker/src/lease_keeper.h (docs/operations.md, high availability).
  //
  // Takes the lease for `holder` for `ttl_ms` if it is free, expired, or
  // already `holder`'s; returns its new epoch (one more at every take, so
  // that a restarted holder fences its former self), or nullopt while
  // another holder's lease runs. A holder keeps its lease with RenewLease.
  StatusOr<std::optional<int64_t>> AcquireLease(const std::string& holder, int64_t ttl_ms);
  // Extends `holder`'s unexpired lease of `epoch`; false if it was lost
  // (expired, or taken).
  StatusOr<bool> RenewLease(const std::string& holder, int64_t epoch, int64_t ttl_ms);
  // Ends `holder`'s unexpired lease of `epoch` now, so that another broker
  // may take it at once; false if it was no longer held. Call it only
  // once nothing of this broker commits any more.
  StatusOr<bool> ReleaseLease(const std::string& holder, int64_t epoch);
  // From now on every Apply first checks, inside its transaction, that
  // `epoch` is still the unexpired lease's (0: no check): a broker that lost
  // its lease (paused past it, cut off) commits nothing more, and the
  // batch fails as a whole. A takeover waits for a batch that passed the
  // check, so no batch of an older epoch commits after it.
  void FenceWith(int64_t epoch) { fence_epoch_ = epoch; }
  // Server-side limits for this connection's sessions (0: the server's
  // default), applied now and at every reconnection. A broker paused in
  // the middle of a batch holds the lease row until its transaction ends:
  // `idle_in_transaction_ms` on the fenced writer lets the server end it,
  // so a takeover is not held up for the length of the pause; `lock_timeout_ms`
  // on the lease connection makes a take or renewal that waits for such a
  // row fail and be tried again instead of hanging.
  Status SetSessionTimeouts(int64_t lock_timeout_ms, int64_t idle_in_transaction_ms);
  // Tests: the next Apply loses its connection after the server has run
  // the batch and before its answer is read (Apply must still say whether
  // the batch committed).
  void BreakConnectionAfterNextSendForTesting() { break_after_send_for_testing_ = true; }

  // One prepared statement's use: its parameters, sent in binary.
  class Params;

 private:
  friend class PgImport;
  PgStore() = default;
  // Connects (again, after a lost connection) and prepares the statements.
  Status Connect();
  Status EnsureConnected();
  Status PrepareAll();
  Status Migrate();
  Status CheckKey();
  Status ApplySessionTimeouts();
  // Sends `calls` between BEGIN and COMMIT in one pipeline and checks every
  // result; on any failure the transaction is rolled back.
  struct Call;
  // With `seqs` (one per copy of the batch): the seqs the copies were
  // queued under, filled in once the batch committed.
  Status RunPipeline(const std::vector<Call>& calls, std::vector<int64_t>* seqs = nullptr);
  // What a batch does to case keys (store/case_keys.h), worked out before
  // it is sent (one read of the batch's cases' keys): the key each
  // case-keyed copy is sealed under, the keys it adds and deletes, and a
  // rotation of the ring when it deletes any.
  struct CaseKeyPlan {
    std::map<std::string, CaseKey> keys;  // by sender + '\0' + case hash
    std::vector<std::pair<std::string, std::string>> added, deleted;  // (sender, case hash)
    std::map<std::string, std::vector<uint8_t>> added_wrapped;        // by id
    std::optional<CaseKeyRing::Staged> staged;
  };
  StatusOr<CaseKeyPlan> PlanCaseKeys(const WriteBatch& batch);
  // The case keys this writer read or added in batches that committed, so
  // that a batch of known cases is sent without a read first (a round trip
  // per batch). Forgotten at any failure, a batch deleting keys, a ring or
  // fence epoch change: another broker may have shredded a case meanwhile
  // only if this one lost the lease, which changes the fence.
  void ForgetKnownCaseKeys();
  void RememberCaseKeys(const std::map<std::string, CaseKey>& keys);
  StatusOr<std::optional<std::pair<uint64_t, std::vector<uint8_t>>>> ReadKekMeta();
  // At the writer's first batch: CaseKeyRing::Settle, or the adoption of a
  // restored backup's keys (SqliteStore::AdoptRing).
  Status SettleRing();
  // `token` marks the batch in the database (table last_batch).
  Status BuildBatch(const WriteBatch& batch, const std::string& token, const CaseKeyPlan& plan,
                    std::vector<Call>* calls) const;
  void BreakConnectionForTesting();

  pg_conn* conn_ = nullptr;
  PgConnectOptions options_;
  std::string where_;  // DescribePgUrl(options_.url), for errors
  StoreKey key_{};
  std::shared_ptr<CaseKeyRing> ring_;  // null: copies under the store key (see SqliteStore::Open)
  bool ring_settled_ = false;          // SettleRing ran
  size_t max_value_bytes_ = 0;
  int64_t fence_epoch_ = 0;  // see FenceWith
  std::map<std::string, CaseKey> known_keys_;  // by sender + '\0' + case hash
  int64_t known_fence_ = 0;                    // fence_epoch_ when known_keys_ began
  uint64_t known_ring_epoch_ = 0;              // ring_->epoch() when known_keys_ began
  std::string token_prefix_;  // random, per store object: batches' tokens
  uint64_t batches_ = 0;
  // RunPipeline lost the connection after sending COMMIT (Apply then asks
  // the database whether the batch's token is there).
  bool commit_outcome_unknown_ = false;
  bool break_after_send_for_testing_ = false;
  int64_t lock_timeout_ms_ = 0, idle_in_transaction_ms_ = 0;  // see SetSessionTimeouts
};

// For `liaison store migrate`: one transaction that fills an empty
// database with the rows of another store (store/rows.h), sealed copies as
// they are. Nothing of it is visible, or stays, unless Commit succeeds.
class PgImport final : public RowSink {
 public:
  // Connects, creates the schema if there is none, checks `key` against
  // the database's key check (making it in a new database), opens the
  // transaction, takes the lock brokers take at start (so one starting
  // meanwhile waits for the commit), and refuses a database that holds any
  // row of a store already.
  static StatusOr<std::unique_ptr<PgImport>> Begin(const PgConnectOptions& options, const StoreKey& key);
  ~PgImport() override;  // rolls back unless committed

  Status Put(const Rows& rows) override;
  // Sets the ledger position and where the numbering goes on, counts every
  // table inside the transaction, and commits only if the counts are
  // `totals.counts`. Returns the counts found.
  StatusOr<RowCounts> Commit(const StoreTotals& totals);
  const std::string& where() const { return store_->where_; }

 private:
  PgImport() = default;
  Status Exec(const char* name, const PgStore::Params& params, const char* what);
  std::unique_ptr<PgStore> store_;
  bool open_ = false;  // the transaction
};

}  // namespace liaison::store

#endif  // LIAISON_BROKER_POSTGRES_PG_STORE_H_
