// The agent's outbox: outgoing messages kept in the agency's own SQLite file
// until the broker has answered them, so that an agency system can hand
// messages over while the broker is down. `liaison send` uses it when the
// agent config names an `outbox`.
//
// Not thread-safe; one process at a time per file (SQLite locks it).
#ifndef LIAISON_OUTBOX_H_
#define LIAISON_OUTBOX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "liaison/agent.h"

struct sqlite3;

namespace liaison {

class Outbox {
 public:
  // Opens or creates the outbox at `path`.
  static StatusOr<std::unique_ptr<Outbox>> Open(const std::string& path);
  ~Outbox();

  // Durable on return (synchronous=FULL).
  Status Add(std::span<const uint8_t> envelope);
  StatusOr<int64_t> Size();

  // Sends the waiting messages, oldest first, through `agent`, removing each
  // once the broker has answered it (whatever the answer: a rejection will
  // not get better by resending) and passing the receipt to `on_receipt`.
  // Stops at the first message the broker does not answer (it stays, and is
  // sent first next time) and returns that error.
  Status Flush(Agent& agent, const std::function<void(const ReceiptBuffer&)>& on_receipt);

 private:
  Outbox() = default;
  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace liaison

#endif  // LIAISON_OUTBOX_H_
