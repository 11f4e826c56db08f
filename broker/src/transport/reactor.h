// The transport: the broker's ROUTER socket (CURVE server, authenticated
// through ZapHandler), one endpoint per served broker key, and the
// connections' roles. It drains the socket in batches and hands each SEND
// and ACK to the message core (core/pipeline.h), which decides, commits and
// delivers through this class's Link.
#ifndef LIAISON_BROKER_TRANSPORT_REACTOR_H_
#define LIAISON_BROKER_TRANSPORT_REACTOR_H_

#include <chrono>
#include <cstdint>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "config/broker_config.h"
#include "core/link.h"
#include "core/pipeline.h"
#include "core/token_bucket.h"
#include "liaison/keys.h"
#include "store/store.h"
#include "transport/zap_handler.h"

namespace liaison::audit {
class Ledger;
struct Entry;
}
namespace liaison::policy {
class PolicySet;
}
namespace liaison::store {
class Store;
}

namespace liaison::broker {

class Metrics;
struct SetAsideRequest;  // admin/operator_server.h
struct SetAsideOutcome;

// A CURVE key the broker serves, each on its own endpoint (the CURVE
// handshake has one server key per endpoint). The first of a reactor's keys
// is the current one; the others are previous keys during a rotation, each
// served until `until_ms`, when its endpoint closes and the connections made
// through it stop being served.
struct ServerKey {
  CurveKeyPair keys;
  std::string listen;
  int64_t until_ms = INT64_MAX;  // Unix ms
};

// A ServerKey as the reactor serves it.
struct ServedKey {
  ServerKey key;
  std::string domain;    // ZAP domain of its endpoint
  std::string endpoint = {};  // concrete, once bound
  bool retired = false;  // endpoint closed, its connections no longer served
};

// The transport: one thread owns the ROUTER socket (CURVE server,
// authenticated through ZapHandler), its monitor and the connections'
// roles, and moves frames between them and the message core (Pipeline),
// which runs on the same thread and reaches connections through the Link
// this class implements.
class Reactor : private Link {
 public:
  // `server_keys`: the current key first (its listen is config.listen), then
  // the previous keys. `store`, `reader` and `ledger` go to the core.
  Reactor(BrokerConfig config, std::vector<ServerKey> server_keys,
          std::shared_ptr<const policy::PolicySet> policies, std::unique_ptr<store::Store> store,
          std::unique_ptr<store::Store> reader, std::unique_ptr<audit::Ledger> ledger, Metrics* metrics);
  // A standby (an active/standby pair on a PostgreSQL store, docs/operations.md):
  // it binds and authenticates as usual but has no core until Activate();
  // meanwhile it answers every HELLO, SEND and ACK with a `standby` receipt
  // and stores nothing.
  Reactor(BrokerConfig config, std::vector<ServerKey> server_keys,
          std::shared_ptr<const policy::PolicySet> policies, Metrics* metrics);
  ~Reactor() override;

  // Makes a standby the active broker: the core is made and started on the
  // reactor's thread with these (as the first constructor's), and serves
  // from the next message on. Blocks until that is done (at most
  // `timeout`); its result. Safe from any thread while Run() runs; at most
  // once. A failure leaves the reactor a standby.
  Status Activate(std::unique_ptr<store::Store> store, std::unique_ptr<store::Store> reader,
                  std::unique_ptr<audit::Ledger> ledger, std::chrono::milliseconds timeout);
  bool active() const { return core_ready_.load(); }

  // Starts the core's writer, authentication, and binds the ROUTER, one
  // endpoint per server key still valid. On success endpoint() is the
  // current key's concrete endpoint (a "*" port is resolved).
  Status Bind();
  const std::string& endpoint() const { return endpoint_; }

  // Runs the loop on the calling thread until Stop().
  void Run();

  // Asks Run() to return. Safe from any thread (it writes an eventfd).
  void Stop();

  // Replaces the policy set (on reload). Safe from any thread; every
  // message is handled under exactly one set.
  void SetPolicies(std::shared_ptr<const policy::PolicySet> policies);
  std::shared_ptr<const policy::PolicySet> policies() const;
  // See Pipeline::RecordEvents and Pipeline::ActOnSetAside. Safe from any
  // thread.
  void RecordEvents(std::vector<audit::Entry> events);
  StatusOr<SetAsideOutcome> ActOnSetAside(const SetAsideRequest& request, std::chrono::milliseconds timeout);

  const BrokerStats& stats() const { return stats_; }

 private:
  // One live connection of an agency that asked for deliveries.
  struct Receiver {
    std::string routing_id;
    int fd = -1;      // for disconnect logs only
    std::string key;  // the Z85 key it authenticated with
    std::string domain;  // the broker key (ZAP domain) it connected with
  };

  // Link, for the core.
  SendResult SendTo(const std::string& routing_id, std::string_view command, const void* data,
                    size_t size) override;
  const std::string* LiveReceiverOf(const std::string& agency) override;
  bool HasReceiver(const std::string& agency) const override;
  void DropReceiver(const std::string& agency) override;
  std::vector<std::string> ReceiverAgencies() const override;

  void HandleRouterMessage(std::vector<zmq::message_t>& frames);
  // A standby's answer to `command`: a `standby` receipt (a SEND's id
  // echoed when its envelope verifies).
  void AnswerStandby(std::string_view command, const Agency& agency, const std::string& routing_id,
                     const zmq::message_t& body);
  // On the reactor's thread: takes a pending Activate().
  void TakeActivation();
  // `key`: the public key (Z85) the connection authenticated with.
  void HandleHello(const Agency& agency, const std::string& key, const std::string& domain,
                   const std::string& routing_id, int fd, const zmq::message_t& body);
  // True if connections made with the broker key of ZAP `domain` are served.
  bool DomainLive(std::string_view domain, int64_t now_ms) const;
  // Closes the endpoints of previous keys whose time is up.
  void RetireDueKeys(int64_t now_ms);
  void HandleMonitorEvent();
  // Once a second: key retirement, the connected agencies, then the core's.
  void OnTimer();

  BrokerConfig config_;
  std::vector<ServedKey> served_keys_;  // [0] is the current key
  std::shared_ptr<const policy::PolicySet> policies_;  // atomic_load / atomic_store only

  zmq::context_t context_;
  ZapHandler zap_;
  std::unique_ptr<zmq::socket_t> router_;
  std::unique_ptr<zmq::socket_t> monitor_;
  int wake_fd_ = -1;  // eventfd written by Stop()
  std::string endpoint_;

  std::unordered_map<std::string, std::vector<Receiver>> receivers_;  // by agency id
  std::unordered_map<int, std::string> agency_by_fd_;                 // for disconnect logs

  Metrics* metrics_;  // not owned; outlives the reactor
  BrokerStats stats_;
  // HELLOs per connection: a flood is answered `busy`, and logged once per
  // interval rather than once per HELLO (docs/protocol.md §3).
  struct HelloLimit {
    TokenBucket bucket;
    uint64_t refused = 0;  // since the last hello_flood line
    std::chrono::steady_clock::time_point logged{};
  };
  std::unordered_map<std::string, HelloLimit> hello_limits_;  // by connection (routing id)
  // True if the connection `routing_id` of `agency` may say HELLO now; logs
  // a flood. Per connection: an agency's many workers reconnecting at once
  // (after a broker restart) each say HELLO once and are all welcomed.
  bool HelloAllowed(const std::string& agency, const std::string& routing_id);

  // Activate() hands its parts over here and waits for the result.
  struct Activation;
  std::mutex activation_mu_;
  std::shared_ptr<Activation> activation_;  // GUARDED_BY(activation_mu_)
  int activate_fd_ = -1;                    // eventfd written by Activate()
  // Events recorded while a standby (RecordEvents): handed to the core when
  // it is made.
  std::vector<audit::Entry> standby_events_;  // GUARDED_BY(activation_mu_)

  // Last: it uses the members above through the Link. Made at construction
  // (active) or by Activate() on the reactor's thread (standby); never
  // replaced. core_ready_ publishes it to other threads.
  std::unique_ptr<Pipeline> core_;
  std::atomic<bool> core_ready_{false};
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_TRANSPORT_REACTOR_H_
