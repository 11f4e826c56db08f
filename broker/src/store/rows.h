// Every row a storage backend keeps, as plain data: what `liaison store
// migrate` moves from one backend to another (docs/operations.md, "High
// availability"). Queued copies travel sealed as they are: their sealing
// binds (sender, id, recipient), not the row's place, and case hashes are
// keyed by the store key, so the same key opens them in the new store.
#ifndef LIAISON_BROKER_STORE_ROWS_H_
#define LIAISON_BROKER_STORE_ROWS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "liaison/status.h"

namespace liaison::store {

struct MessageRow {
  int64_t seq = 0;
  std::string sender, message_id, recipient;
  std::optional<std::string> case_hash;
  int64_t state = 0, created_ms = 0, expires_ms = 0;
  std::optional<int64_t> acked_ms;
  int64_t purge_after_ms = 0;
  std::optional<std::string> label;
};
struct BodyRow {
  int64_t seq = 0;
  std::string sealed;
};
struct ReceiptRow {
  std::string sender, message_id, receipt;
  int64_t purge_after_ms = 0;
};
struct DisclosureRow {
  std::string sender, case_hash, recipient;
};
struct NoticeRow {
  int64_t seq = 0;
  std::string agency, receipt;
};
struct CaseKeyRow {
  std::string sender, case_hash;
  int64_t epoch = 0;
  std::string wrapped;  // under the case-key ring's KEK of `epoch`: the ring moves with the store
};
struct ClockRow {
  std::string sender, message_id, recipient, label;
  int64_t urgency = 0, started_ms = 0, due_ms = 0, purge_after_ms = 0;
  std::optional<int64_t> fired_ms, answered_ms;
};
struct ThreadRow {
  std::string ref, holder, message_id, root, origin, purpose;
  int64_t handling = 0;
  std::string circle, onward;  // comma-separated, as stored
  int64_t purge_after_ms = 0;
};
struct GrantRow {
  std::string root, grantee;
  int64_t purge_after_ms = 0;
};
struct LedgerTailRow {
  int64_t seq = 0, first_seq = 0;
  std::string lines;
};

// A part of a store's rows; a backend hands them over in parts of bounded
// size, so that a large store is never held in memory whole.
struct Rows {
  std::vector<MessageRow> messages;
  std::vector<BodyRow> bodies;
  std::vector<ReceiptRow> receipts;
  std::vector<DisclosureRow> disclosures;
  std::vector<NoticeRow> notices;
  std::vector<LedgerTailRow> ledger_tail;
  std::vector<CaseKeyRow> case_keys;
  std::vector<ClockRow> clocks;
  std::vector<ThreadRow> threads;
  std::vector<GrantRow> grants;
  size_t size() const {
    return messages.size() + bodies.size() + receipts.size() + disclosures.size() + notices.size() +
           ledger_tail.size() + case_keys.size() + clocks.size() + threads.size() + grants.size();
  }
};

// How many rows of each table: what the copy is checked against.
struct RowCounts {
  int64_t messages = 0, bodies = 0, receipts = 0, disclosures = 0, notices = 0, ledger_tail = 0, case_keys = 0,
          clocks = 0, threads = 0, grants = 0;
  bool operator==(const RowCounts& o) const {
    return messages == o.messages && bodies == o.bodies && receipts == o.receipts &&
           disclosures == o.disclosures && notices == o.notices && ledger_tail == o.ledger_tail &&
           case_keys == o.case_keys && clocks == o.clocks && threads == o.threads &&
           grants == o.grants;
  }
  std::string ToString() const {
    return "messages " + std::to_string(messages) + ", bodies " + std::to_string(bodies) + ", receipts " +
           std::to_string(receipts) + ", disclosures " + std::to_string(disclosures) + ", notices " +
           std::to_string(notices) + ", ledger_tail " + std::to_string(ledger_tail) + ", case_keys " +
           std::to_string(case_keys) + ", clocks " + std::to_string(clocks) + ", threads " +
           std::to_string(threads) + ", grants " + std::to_string(grants);
  }
};

// What is not a table's rows: the ledger's committed position and where
// the store's numbering goes on (the next seq of messages and of notices,
// so that no number given out before is given out again).
struct StoreTotals {
  RowCounts counts;
  std::optional<int64_t> ledger_position;
  int64_t last_message_seq = 0, last_notice_seq = 0;
  // The case-key ring's epoch the case keys are under, and its check
  // (store/case_keys.h); nullopt: the store has none yet.
  std::optional<int64_t> case_kek_epoch;
  std::string case_kek_check;
};

// Where an export puts its rows (e.g. a transaction on the new store).
class RowSink {
 public:
  virtual ~RowSink() = default;
  virtual Status Put(const Rows& rows) = 0;
};

}  // namespace liaison::store

#endif  // LIAISON_BROKER_STORE_ROWS_H_
