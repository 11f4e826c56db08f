// Which (sender, message id) keys may have a stored receipt: a Bloom filter
// the core asks before it asks the store, so that a new message (nearly
// every message) is recognised as new without a store read on the core
// thread (on PostgreSQL a round trip that every sender waited behind).
//
// The one guarantee, on which dedupe rests: every key added is answered
// "maybe" until Forget() is told a purge removed every receipt it could
// stand for. So the core adds every key whose receipt a batch writes (before
// the batch commits: a key of a failed batch only costs a store read later),
// and loads every stored key after it starts. A "maybe" is checked in the
// store: a false one (under 1% of new keys) costs the read the filter saves.
//
// Keys are kept in generations, each a bitset sized when it opens and the
// latest purge-after time of its keys; only the newest takes keys. When a
// batch that purges is formed, Seal() names the generations that purge may
// forget: those closed by then, and the newest too if all its keys are due
// by the cut-off (it is then closed). Once the purge committed, Forget()
// drops those of them whose keys are all due by its cut-off. Which keys a
// purge may forget is thus decided by the order of events, not by the clock
// (a clock set back must not make a key admitted after the purge look due by
// it). Memory follows the receipts the store keeps (2 to 5 bytes a key).
// Not thread-safe: one thread (the core) owns it.
#ifndef LIAISON_BROKER_CORE_RECEIPT_FILTER_H_
#define LIAISON_BROKER_CORE_RECEIPT_FILTER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string_view>
#include <vector>

namespace liaison::broker {

class ReceiptFilter {
 public:
  // `first_capacity`: keys the first generation holds at the target false
  // positive rate; each next one holds twice as many as the last, up to
  // kMaxCapacity.
  explicit ReceiptFilter(size_t first_capacity = 1 << 16);

  // Records (sender, id), whose receipt is kept until `purge_after_ms`.
  void Add(std::string_view sender, std::string_view message_id, int64_t purge_after_ms);
  // False only if (sender, id) was never added (or its generation was
  // forgotten): then the store holds no receipt for it.
  bool MayContain(std::string_view sender, std::string_view message_id) const;
  // For a purge with `cut_off_ms` in the batch being formed: returns the
  // last generation it may forget (0: none), to give Forget once it
  // committed. If every key of the newest is due by the cut-off, the newest
  // is closed (the next Add opens another); else it is not among them (its
  // keys are not all due, and keys added later must not be forgotten).
  uint64_t Seal(int64_t cut_off_ms);
  // A purge that removed every receipt with purge_after_ms <= cut_off_ms
  // committed: the generations up to `sealed` (Seal's answer when its batch
  // was formed) whose keys are all due by the cut-off go.
  void Forget(int64_t cut_off_ms, uint64_t sealed);

  size_t keys() const;  // added and not forgotten
  size_t bytes() const;
  size_t generations() const { return generations_.size(); }

  static constexpr size_t kMaxCapacity = size_t{1} << 26;

 private:
  struct Generation {
    uint64_t id = 0;             // from 1, in the order they open
    bool sealed = false;
    std::vector<uint64_t> bits;  // a power of two of them
    size_t capacity = 0;
    size_t keys = 0;
    int64_t last_purge_after_ms = INT64_MIN;
  };
  static void Hash(std::string_view sender, std::string_view message_id, uint64_t* h1, uint64_t* h2);
  // The bit of `g` that probe `i` of a key hashed to (h1, h2) sets and tests.
  static uint64_t Probe(const Generation& g, uint64_t h1, uint64_t h2, int i);
  static bool Test(const Generation& g, uint64_t h1, uint64_t h2);
  void Open(size_t capacity);

  std::deque<Generation> generations_;
  size_t next_capacity_;
  uint64_t next_id_ = 1;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_CORE_RECEIPT_FILTER_H_
