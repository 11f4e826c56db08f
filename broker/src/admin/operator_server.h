// The operators' endpoint: `liaison status` and `liaison queues` talk to it
// over a Unix socket that only the broker's own user may use (the socket is
// mode 0600 and every peer's uid is checked). It answers with names, ids,
// counts and ages, never message contents.
//
//   GET /v1/status                         role, uptime, versions, agencies, queues, ledger
//   GET /v1/queues                         per recipient: queued, oldest age, set aside
//   GET /v1/queues?recipient=ID[&limit=N]  that recipient's copies: seq, sender, id, type, age
//   POST /v1/queues/set-aside?recipient=ID&action=purge|requeue&seq=S1,S2,...|all
//                                          purges or requeues that recipient's set-aside copies,
//                                          each with a ledger record; answers what was done
//
// Append `format=json` for JSON. Reads the store through a connection of
// its own (committed data only); runs on its own thread, one request at a
// time, each bounded by a timeout.
#ifndef LIAISON_BROKER_ADMIN_OPERATOR_SERVER_H_
#define LIAISON_BROKER_ADMIN_OPERATOR_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "admin/metrics.h"
#include "liaison/status.h"

namespace liaison::store {
class Store;
}

namespace liaison::broker {

// An operator's purge or requeue of set-aside copies (liaison queues).
struct SetAsideRequest {
  bool requeue = false;        // else purge
  std::string recipient;
  std::vector<int64_t> seqs;   // empty: all of the recipient's set-aside copies
};

// What was done: names and ids, never contents.
struct SetAsideOutcome {
  struct Copy {
    int64_t seq = 0;
    std::string sender, message_id, type;
  };
  std::vector<Copy> done;
  std::vector<int64_t> not_set_aside;  // asked for, but not a set-aside copy of the recipient
};

struct OperatorSources {
  const Metrics* metrics = nullptr;
  std::function<std::string()> policy_version;  // thread-safe
  std::unique_ptr<store::Store> store;           // used on the server's thread only
  std::string ledger_path;
  // Acts on set-aside copies through the broker's core, which owns the
  // ledger and the store's writer (blocks until the change is committed or
  // refused). Unset: the endpoint refuses such requests.
  std::function<StatusOr<SetAsideOutcome>(const SetAsideRequest&)> set_aside;
};

class OperatorServer {
 public:
  explicit OperatorServer(OperatorSources sources);
  ~OperatorServer();  // stops

  // Listens on the Unix socket `path` (replacing a stale socket file, never
  // another kind of file), mode 0600.
  Status Start(const std::string& path);
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_ADMIN_OPERATOR_SERVER_H_
