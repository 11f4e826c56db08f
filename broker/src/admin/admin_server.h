// The admin endpoint (Boost.Beast, plain HTTP, loopback by default):
// GET /metrics (Prometheus text), /healthz (the reactor loop is alive),
// /readyz (listening, store and ledger writable). Runs on its own thread.
#ifndef LIAISON_BROKER_ADMIN_ADMIN_SERVER_H_
#define LIAISON_BROKER_ADMIN_ADMIN_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "admin/metrics.h"
#include "liaison/status.h"

namespace liaison::broker {

class AdminServer {
 public:
  explicit AdminServer(const Metrics& metrics);
  ~AdminServer();  // stops

  // Binds "HOST:PORT" (port 0 picks a free one) and starts serving.
  Status Start(const std::string& listen);
  void Stop();
  // "HOST:PORT" actually bound.
  const std::string& endpoint() const { return endpoint_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string endpoint_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_ADMIN_ADMIN_SERVER_H_
