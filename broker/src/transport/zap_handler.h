// ZAP (ZeroMQ RFC 27) handler: admits a CURVE client only if its public key
// is registered for an agency, and names the connection with that agency id
// (the ZAP User-Id, which the reactor reads from every message). Runs on its
// own thread with a REP socket on inproc://zeromq.zap.01.
#ifndef LIAISON_BROKER_TRANSPORT_ZAP_HANDLER_H_
#define LIAISON_BROKER_TRANSPORT_ZAP_HANDLER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <zmq.hpp>

#include "liaison/status.h"
#include "registry/agency_directory.h"

namespace liaison::broker {

// The connection metadata property holding the Z85 public key the
// connection authenticated with; the reactor compares it with the current
// registration so that a key replaced or revoked by a reload stops working
// on connections that are already open.
inline constexpr const char* kKeyProperty = "X-Liaison-Key";
// The connection metadata property naming the broker key (its ZAP domain)
// the connection was made with, so that connections made with a retired
// broker key stop being served.
inline constexpr const char* kBrokerKeyProperty = "X-Liaison-Broker-Key";

// The ZAP domain of each broker key: its endpoint's bind sets it, and every
// handshake through that endpoint names it.
inline constexpr const char* kCurrentKeyDomain = "liaison";
std::string PreviousKeyDomain(size_t index);  // "liaison-previous-<index>"

class ZapHandler {
 public:
  // `directory` returns the current registration snapshot; called once per
  // handshake, from the handler's thread.
  using DirectorySource = std::function<std::shared_ptr<const AgencyDirectory>()>;

  // For each ZAP domain served (one per broker key): the Unix time (ms) from
  // which handshakes in it are refused (the current key: INT64_MAX), and the
  // broker key's fingerprint for the logs. Handshakes in any other domain
  // are refused.
  struct KeyWindow {
    int64_t until_ms = INT64_MAX;
    std::string fingerprint;
  };
  ZapHandler(zmq::context_t& context, DirectorySource directory,
             std::map<std::string, KeyWindow> domains);
  ~ZapHandler();  // stops the thread

  // Binds the ZAP endpoint and starts the thread. Must run before any CURVE
  // server socket of the context binds, or early handshakes go unchecked.
  Status Start();
  void Stop();

  uint64_t admitted() const { return admitted_.load(); }
  uint64_t refused() const { return refused_.load(); }

 private:
  void Run();
  void HandleRequest(std::vector<zmq::message_t>& request);

  zmq::context_t& context_;
  DirectorySource directory_;
  const std::map<std::string, KeyWindow> domains_;
  std::unique_ptr<zmq::socket_t> socket_;  // used only by thread_ after Start()
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> admitted_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_TRANSPORT_ZAP_HANDLER_H_
