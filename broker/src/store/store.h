// The broker's durable state, as the core sees it: one row per (message,
// recipient) holding the policy-rewritten message sealed under the store key
// (store/sealing.h), the original receipt of every message (to answer
// resends), which agencies received data of which case (for erasure), the
// notices (delivered / expired) owed to senders, and the ledger records each
// batch committed. The core writes it only in batches (WriteBatch), each
// durable as a whole or not at all.
#ifndef LIAISON_BROKER_STORE_STORE_H_
#define LIAISON_BROKER_STORE_STORE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "liaison/status.h"
#include "store/sealing.h"

namespace liaison::store {

// A queued copy's label, which the core attaches at Enqueue and the store
// returns with the copy: what the message's later ledger records
// (delivered, expired, erased, purged, requeued) and operators' listings
// need of it, and the store keeps nowhere else. "<case pseudonym>|<type>";
// neither part holds a '|' (a hex pseudonym, a payload type's name).
struct CopyLabel {
  std::string case_pseudonym;
  std::string type;  // the payload type's name, e.g. "CaseReferral"

  std::string Format() const { return case_pseudonym + "|" + type; }
  // A label without '|' is all pseudonym (no type).
  static CopyLabel Parse(std::string_view label) {
    const size_t bar = label.rfind('|');
    if (bar == std::string_view::npos) return {std::string(label), ""};
    return {std::string(label.substr(0, bar)), std::string(label.substr(bar + 1))};
  }
};

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

// A response deadline: a CaseReferral stored for a recipient waits for that
// recipient's ReferralResponse (docs/protocol.md, "Response deadlines").
// Identified by (sender, message_id, recipient): the referral's copy.
struct Clock {
  std::string sender, message_id, recipient;
  std::string label;  // the copy's label (CopyLabel): case pseudonym and type
  int32_t urgency = 0;  // wire::Urgency
  int64_t started_ms = 0, due_ms = 0;
};

// A case thread (docs/protocol.md, "Case threads"): what the broker knows of
// one delivered copy under the opaque reference it gave that copy. A message
// derived from it (Envelope.derived_from) is held to the handling code of
// the thread's root: the first message of the thread that carried a code.
struct Thread {
  std::string ref;     // 32 hex digits, random; the copy's Envelope.thread
  std::string holder;  // the agency that received the copy
  std::string message_id;  // of the message the copy is of (its sender's id)
  std::string root;    // the ref that names the whole thread (its root copy's first)
  std::string origin;  // the root's sender: the originator
  int32_t handling = 0;  // wire::Handling of the root
  std::string purpose;   // of the root
  // The agencies the root was stored for, and what the originator's release
  // rule allowed this holder to pass the case on to ("agency" or
  // "kind:<kind>"): with `origin`, whom an H2 thread may reach.
  std::vector<std::string> circle, onward;
  // What the originator permitted since (PermissionGrant), for the whole
  // thread (its root): "agency" or "kind:<kind>", as `onward`.
  std::vector<std::string> granted;
};

// A thread's lists as the stores keep them: comma-separated (agency ids and
// kinds are vocabulary ids, which hold no comma).
inline std::string JoinList(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += ',';
    out += item;
  }
  return out;
}
inline std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    out.emplace_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

// Everything one batch decided, written by Store::Apply in one transaction
// with one fsync: all of it is durable, or none of it. Plain data, built by
// the broker core on its thread and applied on the writer's.
struct WriteBatch {
  struct Copy {
    std::string sender, message_id, recipient, case_ref, label;
    std::vector<uint8_t> envelope;  // plaintext; sealed by Apply
    int64_t now_ms = 0, expires_ms = 0, purge_after_ms = 0;
    // Sealed under its case's key (store/case_keys.h) when the store has a
    // case-key ring; false: under the store key, for a copy that must stay
    // readable after its case is shredded (an erasure's own copies).
    bool case_keyed = true;
  };
  // A case whose key is destroyed (sender, case_ref): after everything else
  // of the batch, in the same transaction, so an erasure's own copies are
  // committed with it or the key survives.
  struct Shred {
    std::string sender, case_ref;
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
  struct ClockStart {
    Clock clock;
    int64_t purge_after_ms = 0;  // forgotten then, answered or not
  };
  struct ThreadStart {
    Thread thread;
    int64_t purge_after_ms = 0;  // forgotten with the copy's rows
  };
  // A PermissionGrant accepted from a thread's originator: each grantee
  // ("agency" or "kind:<kind>") is allowed for the whole thread (its root).
  struct Grant {
    std::string root;
    std::vector<std::string> grantees;
    int64_t purge_after_ms = 0;  // forgotten with the grant's own rows
  };
  // (sender, message_id, recipient) of a clock, and when it ended.
  struct ClockEnd {
    std::string sender, message_id, recipient;
    int64_t at_ms = 0;
  };
  // The clocks of a withdrawn case: its referrals' copies carry the case's
  // pseudonym in their label (CopyLabel), and their clocks are forgotten,
  // so that no overdue notice or escalation follows an erasure.
  struct ClocksWithdrawn {
    std::string sender, case_pseudonym;
  };
  std::vector<Copy> copies;             // queued, each with its disclosure
  std::vector<Receipt> receipts;        // kept to answer resends
  std::vector<Acked> acks;              // queued copies delivered
  std::vector<int64_t> expired;         // queued copies past their expiry
  std::vector<int64_t> erased;          // queued copies of a withdrawn case
  std::vector<Shred> shred;             // cases whose key goes (see Shred)
  std::vector<int64_t> set_aside;       // queued copies that do not decrypt
  std::vector<int64_t> purged;          // set-aside copies an operator deletes
  std::vector<int64_t> requeued;        // set-aside copies an operator puts back in the queue
  std::vector<ClockStart> clocks_started;   // referrals stored: their response deadlines
  std::vector<ClockEnd> clocks_answered;    // a response stored: the clock stops (if it runs)
  std::vector<ClockEnd> clocks_fired;       // past the deadline: fires once (if neither fired nor answered)
  std::vector<ClocksWithdrawn> clocks_withdrawn;  // a case's clocks, gone with its erasure
  std::vector<ThreadStart> threads;         // copies stored: their thread references
  std::vector<Grant> grants;                // permissions granted (after `threads` in the same batch)
  std::vector<std::pair<std::string, std::vector<uint8_t>>> notices;  // (agency, receipt)
  std::vector<int64_t> notices_sent;    // notices to forget
  std::vector<std::pair<uint64_t, std::string>> ledger;  // see AppendLedger
  uint64_t trim_ledger_to = 0;          // see TrimLedger (0: nothing)
  int64_t purge_before_ms = 0;          // see PurgeDue (0: nothing)

  bool empty() const {
    return copies.empty() && receipts.empty() && acks.empty() && expired.empty() && erased.empty() && shred.empty() &&
           set_aside.empty() && purged.empty() && requeued.empty() && clocks_started.empty() &&
           clocks_answered.empty() && clocks_fired.empty() && clocks_withdrawn.empty() && threads.empty() &&
           grants.empty() &&
           notices.empty() && notices_sent.empty() && ledger.empty() &&
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

// A position in the receipts' keys (Store::ScanReceiptKeys): the scan goes
// on after (sender, message_id). The default is before every key.
struct ReceiptKeyCursor {
  std::string sender;
  std::string message_id;
};

// What the broker core stores through: it commits each batch with Apply and
// reads committed state with the rest. A backend implements it (SQLite,
// sqlite/sqlite_store.h, the embedded default); the core never names one.
//
// One object is one connection, used by one thread at a time. The broker
// opens one for its writer thread (Apply) and others for reading; a reader
// sees only what Apply committed. All methods return what failed and why
// (never a partial result); none throws.
class Store {
 public:
  virtual ~Store() = default;

  // Writes `batch` in one transaction and commits it: durable on a return of
  // Ok, and on failure nothing of it is stored. A message is acknowledged as
  // stored only after its batch's Apply returned Ok.
  // With `seqs`: on Ok it holds, for each of batch.copies in order, the
  // seq the copy was queued under, or 0 where that is not known (a copy
  // queued already, a commit confirmed after a lost connection).
  virtual Status Apply(const WriteBatch& batch, std::vector<int64_t>* seqs) = 0;
  Status Apply(const WriteBatch& batch) { return Apply(batch, nullptr); }

  // The receipt first given for (sender, id), if any.
  virtual StatusOr<std::optional<std::vector<uint8_t>>> FindReceipt(const std::string& sender,
                                                                   const std::string& message_id) = 0;
  // FindReceipt for each (sender, id) of `keys`, in the same order: one
  // round trip where the backend can (the default asks one by one).
  virtual StatusOr<std::vector<std::optional<std::vector<uint8_t>>>> FindReceipts(
      const std::vector<std::pair<std::string, std::string>>& keys) {
    std::vector<std::optional<std::vector<uint8_t>>> out;
    out.reserve(keys.size());
    for (const auto& [sender, id] : keys) {
      auto found = FindReceipt(sender, id);
      if (!found.ok()) return found.status();
      out.push_back(std::move(*found));
    }
    return out;
  }
  // Calls `each` with the key and purge-after time of up to `limit` stored
  // receipts whose key is after `*after`, in key order, and moves `*after`
  // to the last of them: a scan in pages (the core's ReceiptFilter is
  // loaded so, a page at a time, from a default ReceiptKeyCursor on).
  // Returns how many it visited: fewer than `limit` once no key is left.
  // On failure `*after` is unchanged; `each` may have seen some of the page.
  using ReceiptKeyVisitor =
      std::function<void(std::string_view sender, std::string_view message_id, int64_t purge_after_ms)>;
  virtual StatusOr<size_t> ScanReceiptKeys(ReceiptKeyCursor* after, size_t limit, const ReceiptKeyVisitor& each) = 0;
  // Queued copies of `recipient` with seq > after_seq, in order, at most
  // `limit`, decrypted. A copy that does not decrypt is logged (its seq,
  // never contents) and skipped, and its seq added to `damaged` for the
  // caller to set aside (WriteBatch::set_aside).
  virtual StatusOr<std::vector<QueuedMessage>> Pending(const std::string& recipient, int64_t after_seq,
                                                       int limit, std::vector<int64_t>* damaged) = 0;
  // Queued copies past their expiry.
  virtual StatusOr<std::vector<ExpiredMessage>> Due(int64_t now_ms) = 0;
  // Queued copies of `sender`'s case.
  virtual StatusOr<std::vector<ExpiredMessage>> QueuedOfCase(const std::string& sender,
                                                             const std::string& case_ref) = 0;
  // Number of queued copies per recipient.
  virtual StatusOr<std::unordered_map<std::string, int64_t>> QueueDepths() = 0;
  // Agencies that were sent data of `case_ref` by `sender`.
  virtual StatusOr<std::vector<std::string>> Disclosures(const std::string& sender,
                                                         const std::string& case_ref) = 0;
  // Notices owed to `agency`, oldest first, at most `limit`.
  virtual StatusOr<std::vector<Notice>> Notices(const std::string& agency, int limit) = 0;
  // Clocks past their deadline at `now_ms`, neither fired nor answered,
  // the earliest first, at most `limit`.
  virtual StatusOr<std::vector<Clock>> DueClocks(int64_t now_ms, int limit) = 0;
  // The thread of `ref` (Thread), if the store holds it.
  virtual StatusOr<std::optional<Thread>> FindThread(const std::string& ref) = 0;
  // FindThread for each of `refs`, in the same order: one round trip where
  // the backend can (the default asks one by one).
  virtual StatusOr<std::vector<std::optional<Thread>>> FindThreads(const std::vector<std::string>& refs) {
    std::vector<std::optional<Thread>> out;
    out.reserve(refs.size());
    for (const std::string& ref : refs) {
      auto found = FindThread(ref);
      if (!found.ok()) return found.status();
      out.push_back(std::move(*found));
    }
    return out;
  }
  // When the oldest clock still waiting for its response started (fired
  // or not); nullopt if none waits.
  virtual StatusOr<std::optional<int64_t>> OldestOpenClock() = 0;
  // The ledger records committed with batches and not yet known durable in
  // the ledger file (WriteBatch::ledger, trim_ledger_to): what
  // audit::Ledger::Open matches the file to at start.
  virtual StatusOr<LedgerTail> ReadLedgerTail() = 0;

  // For operators: every recipient with queued or set-aside copies, by
  // recipient id; and one recipient's copies, oldest first, at most `limit`
  // (names and times, never contents).
  virtual StatusOr<std::vector<QueueSummary>> QueueSummaries() = 0;
  virtual StatusOr<std::vector<QueueEntry>> QueueEntries(const std::string& recipient, int limit) = 0;
  // The set-aside copies of `recipient` (damaged: they did not decrypt),
  // oldest first, for an operator to purge or requeue.
  virtual StatusOr<std::vector<ExpiredMessage>> SetAside(const std::string& recipient) = 0;
};

}  // namespace liaison::store

#endif  // LIAISON_BROKER_STORE_STORE_H_
