// The disclosure ledger: an append-only file with one record per decision
// (released, denied, delivered, expired, erased, break-glass), each a line of
// JSON (schemas/ledger.fbs) followed by a tab and the SHA-256 of that JSON.
// Every record names the hash of the previous one, and checkpoint records
// sign the chain with Ed25519, so that `liaison audit verify` finds any
// changed byte and any removed, inserted or reordered record.
//
// Records hold names of agencies, rules and fields, never values; the case
// reference is a keyed pseudonym.
#ifndef LIAISON_BROKER_AUDIT_LEDGER_H_
#define LIAISON_BROKER_AUDIT_LEDGER_H_

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <sys/types.h>
#include <utility>
#include <string>
#include <thread>
#include <vector>

#include "liaison/status.h"
#include "liaison/wire.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace liaison::audit {

// Ed25519 key files (PEM). The private key file must be mode 0600.
Status WriteSigningKey(const std::string& dir, const std::string& name);
StatusOr<std::shared_ptr<EVP_PKEY>> LoadSigningKey(const std::string& path);
StatusOr<std::shared_ptr<EVP_PKEY>> LoadVerifyKey(const std::string& path);
// Hex SHA-256 prefix of the raw public key, to name it in records and logs.
std::string SigningKeyFingerprint(EVP_PKEY* key);

// The key that pseudonymises case references in the ledger, derived from the
// broker's pseudonym key; `liaison audit query --case` derives the same.
std::array<uint8_t, 32> DeriveCaseKey(std::string_view pseudonym_secret);
std::string CasePseudonym(const std::array<uint8_t, 32>& key, std::string_view sender,
                          std::string_view case_ref);
// A case thread's id in the ledger: 24 hex digits of HMAC over its root
// (store::Thread::root), under the case key with a label no agency id can
// take. Empty for an empty root.
std::string ThreadId(const std::array<uint8_t, 32>& key, std::string_view root);

// A record's JSON text: byte for byte what FlatBuffers' printer makes of
// it under the ledger's options (wire::JsonCodec, Root::kLedgerRecord:
// strict JSON, natural UTF-8, one line, default scalars printed), so that
// the hash chain and `liaison audit verify` see the same line either way;
// built by hand because the printer (a FlatBuffer built, then walked by
// reflection) was 7-14% of the store writer's time. Fields in schema order;
// empty strings and vectors are left out, as the object API's Pack leaves
// them out. Aborts on a string that is not valid UTF-8, as the printer
// refuses one (records hold names only).
std::string RecordJson(const ledger::LedgerRecordT& record);

// One decision, before it is numbered and chained.
// What a released ReferralResponse's record holds as `in_reply_to`: the
// first 16 bytes of SHA-256 over "<referral sender>\0<referral id>", in hex,
// never the text the response carried (a payload field). The report finds
// the referral by computing the same from the referral's record.
std::string ReferralLink(std::string_view referral_sender, std::string_view referral_id);

struct Entry {
  ledger::Decision decision = ledger::Decision::released;
  std::string message_id, case_ref, sender, recipient, type, purpose, legal_basis, handling;
  std::vector<std::string> rules, released, transformed, dropped;
  std::string reason, policy_version;
  std::string sender_kind, sender_region, recipient_kind, recipient_region, urgency, response;
  std::string case_pseudonym;  // used when case_ref is empty (events after admission)
  // Policy events (policy_live, policy_refused, dpo_key_pinned, dpo_key_rotated).
  std::string agency, file, file_hash, signer, previous_signer;
  // Response deadlines: a ReferralResponse's referral; an overdue clock's
  // lateness and deadline.
  std::string in_reply_to;
  uint64_t late_seconds = 0, deadline_seconds = 0;
  // Case threads: the thread's id (Ledger::ThreadOf of its root) and what a
  // PermissionRequest asked for or a PermissionGrant allowed.
  std::string thread;
  std::vector<std::string> permission;
};

// (seq, the record's line without its newline): what a batch commits to
// the store beside its decisions.
using LedgerLine = std::pair<uint64_t, std::string>;

// Not thread-safe, with one exception: Add, TakeBatch, has_batch, Discard,
// CaseOf and the syncs belong to the owner's thread (the core's), while
// Write and then Keep or Undo may run on another (the store writer's) as
// long as the two threads hand the ledger over with a happens-before (the
// writer's result), never at once. Its only thread of its own is the
// background sync (SyncInBackground).
//
// A batch's records reach the file before the store commit that decides
// them, and the store commits the same lines: Write() seals and appends
// them (no fsync), the caller commits them with the batch
// (store::Store::AppendLedger) and then says Keep() or Undo(). The store's
// one fsync makes both durable; the file is synced later (Sync()), and the
// store keeps the lines until then. Whatever stops the broker in between,
// Open() cuts the file back to, or completes it up to, what the store
// committed: the ledger and the store never disagree.
class Ledger {
 public:
  // Opens `path` for appending, resuming the chain from its last record. A
  // torn last line (a write cut by a crash, never acknowledged) is cut off
  // with a warning; a last record that does not match its hash stops the
  // start ("run liaison audit verify").
  //
  // `committed_seq` and `committed_lines` are what the store holds
  // (store::Store::ReadLedgerTail): records after `committed_seq` are cut
  // off (their batch never committed) and appended to `path`.uncommitted
  // (kept, never destroyed), and records up to it that the file
  // lacks are appended from `committed_lines`; if they are not there either,
  // Open fails (Corruption). Without `committed_seq` (a store that never
  // committed a record: new, or an older broker's), the file is the truth.
  //
  // With `store_is_authoritative` (a PostgreSQL store shared by several
  // brokers, each with its own file, docs/audit.md), the store's lines are
  // the chain: a record at the end of the file that differs from the
  // store's record of the same number (this broker's batch that never
  // committed, after which another broker went on) is cut as well, so that
  // the file then continues with the store's records.
  static StatusOr<std::unique_ptr<Ledger>> Open(const std::string& path,
                                                std::shared_ptr<EVP_PKEY> signing_key,
                                                const std::array<uint8_t, 32>& case_key,
                                                uint64_t checkpoint_every,
                                                std::optional<uint64_t> committed_seq = std::nullopt,
                                                const std::vector<LedgerLine>& committed_lines = {},
                                                bool store_is_authoritative = false);
  ~Ledger();

  // Adds a record to the batch being built (nothing is written yet).
  void Add(const Entry& entry);
  void Add(Entry&& entry);  // the same without copying its ~30 strings
  bool has_batch() const { return !batch_.empty(); }

  // Seals the batch's records (with a checkpoint when one is due or
  // `checkpoint`) into the chain and appends them to the file, not synced.
  // Returns the lines (none if there was nothing to write) for the store to
  // commit; then exactly one of Keep() or Undo() must follow. On failure the
  // file is cut back, the batch is gone, and the caller must not act on it.
  StatusOr<std::vector<LedgerLine>> Write(bool checkpoint = false);
  // The same for records taken from the batch earlier (TakeBatch).
  StatusOr<std::vector<LedgerLine>> Write(std::vector<Entry> batch, bool checkpoint);
  // Takes the batch being built (Add) for a Write on another thread.
  std::vector<Entry> TakeBatch();
  // The batch's store commit succeeded: the written records stand.
  void Keep();
  // The batch's store commit failed: the file is cut back to before Write().
  void Undo();
  // fdatasyncs the file; returns the last committed record now durable in
  // it (the store may forget the records up to there). A failed sync is
  // sticky: every later one fails too, as the kernel may have dropped the
  // unsynced pages (the store keeps the records; a restart restores them).
  StatusOr<uint64_t> Sync();
  // The same sync on the ledger's own thread, so that the caller never waits
  // for the disk: starts one for the records kept so far (unless one is
  // running) and returns at once the last committed record known durable,
  // or the error of a background sync that failed since the last call
  // (reported once; from then on no sync runs and the durable point stays
  // where it was, so the store keeps every later record).
  StatusOr<uint64_t> SyncInBackground();
  // Write, fsync and Keep, for a ledger kept without a store (tools, tests).
  Status Flush(bool checkpoint = false);
  void Discard() { batch_.clear(); }

  // The last record kept (written and not undone).
  uint64_t last_seq() const { return kept_seq_; }
  // Bytes of a torn last line cut off at Open (0 if none).
  uint64_t repaired_bytes() const { return repaired_bytes_; }
  // Records cut at Open because their batch never committed, and records
  // restored from the store.
  uint64_t uncommitted_cut() const { return uncommitted_cut_; }
  uint64_t restored() const { return restored_; }
  // The pseudonym this ledger records for (sender, case_ref).
  std::string CaseOf(const std::string& sender, const std::string& case_ref) const {
    return CasePseudonym(case_key_, sender, case_ref);
  }
  // The id every record of a case thread carries: keyed by the broker's
  // secret, so that it says nothing of the root's reference, which no
  // agency holds as such but the root's first recipient does.
  std::string ThreadOf(const std::string& root) const { return ThreadId(case_key_, root); }
  uint64_t failures() const { return failures_; }

 private:
  Ledger() = default;
  void SyncLoop();
  // The record's line (without newline), written at `time`; advances the
  // chain.
  std::string Line(ledger::LedgerRecordT& record, const std::string& time);

  // The chain as it was before the last Write().
  struct Rewind {
    uint64_t seq = 0;
    std::string prev;
    uint64_t since = 0;
    off_t size = 0;
  };

  std::string path_;
  int fd_ = -1;
  uint64_t seq_ = 0;            // last record written
  std::atomic<uint64_t> kept_seq_{0};  // last record kept: what a sync makes durable
  std::string prev_;            // its hash
  uint64_t since_checkpoint_ = 0;
  uint64_t checkpoint_every_ = 1000;
  std::atomic<uint64_t> failures_{0};
  uint64_t repaired_bytes_ = 0;
  uint64_t uncommitted_cut_ = 0;
  uint64_t restored_ = 0;
  std::optional<Rewind> undo_;
  bool cut_failed_ = false;  // an Undo could not cut the file back: Write refuses
  std::shared_ptr<EVP_PKEY> key_;
  std::string key_fingerprint_;
  std::array<uint8_t, 32> case_key_{};
  std::vector<Entry> batch_;
  wire::JsonCodec codec_{wire::JsonCodec::Root::kLedgerRecord};

  // The background sync. The file's fd is written by the owner's thread
  // and synced by this one: an fdatasync covers every write before it, and
  // the records up to the target were written (and kept) before it started.
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  uint64_t synced_seq_ = 0;          // GUARDED_BY(sync_mu_): last record known durable in the file
  uint64_t sync_target_ = 0;         // GUARDED_BY(sync_mu_): what the running sync makes durable
  bool sync_running_ = false;        // GUARDED_BY(sync_mu_)
  bool sync_stopping_ = false;       // GUARDED_BY(sync_mu_)
  bool sync_failed_ = false;         // GUARDED_BY(sync_mu_): sticky, see SyncLoop
  std::optional<Status> sync_error_;  // GUARDED_BY(sync_mu_): a failed background sync, not yet reported
  std::thread syncer_;               // started by the first SyncInBackground
};

// The result of checking a ledger file.
struct VerifyReport {
  bool ok = false;
  uint64_t records = 0, checkpoints = 0, last_checkpoint_seq = 0;
  std::vector<std::string> problems;  // "line N: ..." in file order
  std::string Summary() const;
};

// Checks every line's hash, the sequence and chain, and every checkpoint's
// signature under `public_key`.
VerifyReport VerifyLedger(const std::string& path, EVP_PKEY* public_key);

// Reads every record (checkpoints included) as its FlatBuffer; for queries
// and reports. Fails on a line that is not a record.
StatusOr<std::vector<std::vector<uint8_t>>> ReadLedger(const std::string& path);

}  // namespace liaison::audit

#endif  // LIAISON_BROKER_AUDIT_LEDGER_H_
