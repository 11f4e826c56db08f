// The gateway's HTTPS API (docs/openapi.yaml): Boost.Beast over OpenSSL,
// TLS 1.2 or newer, one I/O thread serving every connection with C++20
// coroutines (long polls wait on timers, not threads).
//
//   POST /v1/messages              202 Accepted | 400 | 401 | 409 | 413 | 500
//   GET  /v1/messages/{id}/receipt 200 Receipt | 202 Pending | 401 | 404
//   GET  /v1/inbox?wait=S&max=N    200 InboxPage | 400 | 401 | 409 (webhook mode)
//   POST /v1/inbox/{id}/ack        200 Acked | 401 | 404 | 409 (webhook mode)
//   GET  /healthz                  200 | 503 Health (no token needed)
//
// Clients authenticate with a bearer token, a client certificate, or both,
// as the config says. Errors are Problem objects that name the field or
// header at fault, never a value from the request.
#ifndef LIAISON_AGENTS_GATEWAY_HTTPS_SERVER_H_
#define LIAISON_AGENTS_GATEWAY_HTTPS_SERVER_H_

#include <memory>
#include <string>

#include "broker_link.h"
#include "gateway_config.h"
#include "gateway_store.h"

namespace liaison::gateway {

class HttpsServer {
 public:
  HttpsServer(const GatewayConfig& config, GatewayStore& store, Inbox& inbox, BrokerLink& link);
  ~HttpsServer();  // stops

  // Loads the certificate and key, binds `listen` and starts serving on its
  // own thread. Fails with the file or address at fault.
  Status Start();
  void Stop();
  // HOST:PORT actually bound (the port is chosen by the system for port 0).
  const std::string& endpoint() const { return endpoint_; }
  // A message arrived in the Inbox: wakes the long polls (any thread).
  void NotifyDelivery();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string endpoint_;
};

}  // namespace liaison::gateway

#endif  // LIAISON_AGENTS_GATEWAY_HTTPS_SERVER_H_
