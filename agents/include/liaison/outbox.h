// The agent's outbox: outgoing messages kept in the agency's own SQLite file
// until the broker has answered them, so that an agency system can hand
// messages over while the broker is down. `liaison send` uses it when the
// agent config names an `outbox`.
//
// Every message is sealed under a key of its case (the envelope's case_ref;
// liaison/case_vault.h), kept in the file wrapped under a ring whose KEK
// the outbox key file seals. Erasing a case (an ErasureRequest the broker
// accepted from this outbox, or one received: ShredCase) destroys that key,
// so that no copy of the file, backups included, opens the case again.
//
// Not thread-safe; processes sharing the file are ordered by its write lock.
#ifndef LIAISON_OUTBOX_H_
#define LIAISON_OUTBOX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "liaison/agent.h"
#include "liaison/case_vault.h"

struct sqlite3;

namespace liaison {

class Outbox {
 public:
  // Opens or creates the outbox at `path` with its key at `key_file` (made,
  // with its ring beside it, at first use; AgentOptions::outbox_key_file).
  // Fails if the key or the ring is not this outbox's.
  static StatusOr<std::unique_ptr<Outbox>> Open(const std::string& path, const std::string& key_file);
  ~Outbox();

  // Seals and keeps a verified Envelope; durable on return (synchronous=FULL).
  Status Add(std::span<const uint8_t> envelope);
  StatusOr<int64_t> Size();

  // What waits, oldest first, as it would be sent, and how many rows no
  // longer open (their case was erased; Flush drops them). For tools and
  // tests: what a copy of the file still reveals.
  struct Contents {
    std::vector<std::vector<uint8_t>> envelopes;
    int64_t shredded = 0;
  };
  StatusOr<Contents> Peek();

  // Erases the case `case_ref` of `sender` (an agency id; "" for this
  // agency's own cases): its key is destroyed and its waiting messages are
  // deleted, except those added after `keep_after` (a row of this outbox;
  // 0 = none), which are sealed again under a new key of the case.
  Status ShredCase(const std::string& sender, const std::string& case_ref, int64_t keep_after = 0);

  // Sends the waiting messages, oldest first, through `agent`, removing each
  // once the broker has answered it (whatever the answer: a rejection will
  // not get better by resending) and passing the receipt to `on_receipt`.
  // Stops at the first message the broker does not answer (it stays, and is
  // sent first next time) and returns that error. An ErasureRequest the
  // broker accepted (code ok) shreds its case here (ShredCase) once it left.
  Status Flush(Agent& agent, const std::function<void(const ReceiptBuffer&)>& on_receipt);

 private:
  Outbox() = default;
  struct Row {
    int64_t seq = 0;
    std::optional<std::vector<uint8_t>> envelope;  // nullopt: its case was erased
  };
  // All rows after `after`, opened; inside a vault transaction.
  StatusOr<std::vector<Row>> ReadRows(int64_t after, int64_t limit);
  Status DeleteRow(int64_t seq);
  sqlite3* db_ = nullptr;
  std::string path_;
  std::unique_ptr<CaseVault> vault_;
};

}  // namespace liaison

#endif  // LIAISON_OUTBOX_H_
