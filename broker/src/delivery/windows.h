// Delivery state, one row per recipient agency: the copies sent to its
// receiver and not yet acknowledged (its window), how far it has read its
// queue, and whether its agent acknowledges by id alone. Plain data and no
// I/O, as malamute keeps per-client state: the core asks it what to send
// and tells it what was sent, acked, expired or withdrawn; the store stays
// the write-ahead truth, and a row can always be rebuilt from it by Reset().
//
// Not thread-safe: one thread (the reactor) owns it.
#ifndef LIAISON_BROKER_DELIVERY_WINDOWS_H_
#define LIAISON_BROKER_DELIVERY_WINDOWS_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace liaison::broker {

// A delivery that awaits its ack. A message's identity is (sender, id): ids
// are unique per sender only.
struct InFlight {
  std::string sender;
  std::string message_id;
  int64_t sent_ms = 0;
  std::string label;  // the store's label: case pseudonym and type, for the ledger
};

class DeliveryWindows {
 public:
  // `window`: unacked deliveries per recipient; `redelivery_timeout_ms`: how
  // long the oldest may wait for its ack before the window is sent again.
  DeliveryWindows(size_t window, int64_t redelivery_timeout_ms)
      : window_(window), redelivery_timeout_ms_(redelivery_timeout_ms) {}

  // How many more copies `recipient`'s receiver may be sent now.
  size_t Room(const std::string& recipient) const;
  // The highest queue seq sent to `recipient` (0: none since the last Reset).
  int64_t Cursor(const std::string& recipient) const;
  // True if `recipient` may be sent a copy of `message_id` now: always,
  // unless its agent acks by id alone and a copy of that id is in flight
  // (its ACK would be ambiguous).
  bool MaySend(const std::string& recipient, std::string_view message_id) const;

  // The copy `seq` went out to `recipient`.
  void Sent(const std::string& recipient, int64_t seq, InFlight message);
  // Copies `recipient`'s queue read passes over without sending (set aside
  // as damaged): the cursor moves past them.
  void Skip(const std::string& recipient, int64_t seq);

  // Takes out of `recipient`'s window and returns the copies an ACK names:
  // by (sender, id); an ACK without sender (an older agent) by id alone,
  // and only if the id is unambiguous in flight, else nothing (both are
  // redelivered, and from then on that recipient gets one copy of an id
  // at a time). Empty if the ACK names nothing in flight.
  struct Acked {
    std::vector<std::pair<int64_t, InFlight>> copies;  // by seq
    size_t ambiguous_senders = 0;  // > 1: an id-only ACK that named nothing
  };
  Acked TakeAcked(const std::string& recipient, std::string_view sender, std::string_view id);
  // A queued copy left the queue otherwise (expired, erased): its ACK no
  // longer counts.
  void Withdraw(const std::string& recipient, int64_t seq);

  // `recipient` starts again from the beginning of its queue: a receiver
  // (re)connected or vanished.
  void Reset(const std::string& recipient);
  // Every recipient starts again (the acks of a failed commit were lost).
  // Returns the recipients that had a row.
  std::vector<std::string> ResetAll();
  // Recipients whose oldest unacked copy has waited past the timeout at
  // `now_ms`: their windows start again (everything unacked goes out
  // again, in order). Returns (recipient, copies to redeliver).
  std::vector<std::pair<std::string, size_t>> Overdue(int64_t now_ms);
  // Every recipient with a row.
  std::vector<std::string> Recipients() const;

  // Committed copies held in memory for a receiver that has read its whole
  // queue, so that what a batch just committed is not read back from the
  // store (and unsealed again). The store stays the truth: a row that is
  // not caught up (after every Reset, ResetAll or Overdue, a Forget, or
  // when too much waits) reads its queue from the store, as before.
  struct Fresh {
    int64_t seq = 0;
    std::string sender, message_id, label;
    std::vector<uint8_t> envelope;  // plaintext, as the receiver gets it
  };
  // The store's queue of `recipient` past its cursor was read and held
  // nothing: from now on Offer() keeps what commits for it.
  void CaughtUp(const std::string& recipient);
  // True if `recipient`'s committed, still queued copies past its cursor
  // are exactly its fresh ones (so its queue needs no store read).
  bool IsCaughtUp(const std::string& recipient) const;
  // A copy of `recipient` that a batch committed, with the seq the store
  // gave it. Kept only if the row is caught up and the copy is past what
  // it has (a store read that ran after the commit may have sent it
  // already); past `max_fresh` copies or bytes the row gives up its fresh
  // copies and reads the store again.
  void Offer(const std::string& recipient, Fresh copy);
  // The row reads its queue from the store again (a copy whose seq is not
  // known, a set-aside copy put back).
  void Forget(const std::string& recipient);
  // The oldest fresh copy of `recipient`, or nullptr; Pop() after sending it.
  Fresh* NextFresh(const std::string& recipient);
  void PopFresh(const std::string& recipient);

 private:
  struct Row {
    int64_t cursor = 0;                    // highest seq sent
    std::map<int64_t, InFlight> inflight;  // by seq
    bool caught_up = false;                // see IsCaughtUp
    std::deque<Fresh> fresh;               // by seq, all past cursor
    size_t fresh_bytes = 0;
  };
  // What a caught-up row holds at most before it reads the store again: a
  // receiver that keeps up needs about a batch; one that does not, none.
  static constexpr size_t kMaxFresh = 1024;
  static constexpr size_t kMaxFreshBytes = size_t{4} << 20;
  const size_t window_;
  const int64_t redelivery_timeout_ms_;
  std::unordered_map<std::string, Row> rows_;
  // Recipients whose agent acks by id alone (kept until restart: it only
  // delays the rare second copy of an id).
  std::set<std::string, std::less<>> id_only_ackers_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_DELIVERY_WINDOWS_H_
