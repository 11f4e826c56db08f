// The operators' endpoint: `liaison status` and `liaison queues` talk to it
// over a Unix socket that only the broker's own user may use (the socket is
// mode 0600 and every peer's uid is checked). It answers with names, ids,
// counts and ages, never message contents.
//
//   GET /v1/status                         role, uptime, versions, agencies, queues, ledger
//   GET /v1/queues                         per recipient: queued, oldest age, set aside
//   GET /v1/queues?recipient=ID[&limit=N]  that recipient's copies: seq, sender, id, type, age
//
// Append `format=json` for JSON. Reads the store through a connection of
// its own (committed data only); runs on its own thread, one request at a
// time, each bounded by a timeout.
#ifndef LIAISON_BROKER_ADMIN_OPERATOR_SERVER_H_
#define LIAISON_BROKER_ADMIN_OPERATOR_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "admin/metrics.h"
#include "liaison/status.h"

namespace liaison::store {
class Store;
}

namespace liaison::broker {

struct OperatorSources {
  const Metrics* metrics = nullptr;
  std::function<std::string()> policy_version;  // thread-safe
  std::unique_ptr<store::Store> store;           // used on the server's thread only
  std::string ledger_path;
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
