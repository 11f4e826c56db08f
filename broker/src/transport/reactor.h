// The broker's reactor: one thread owns the ROUTER socket (CURVE server,
// authenticated through ZapHandler) and the durable store. It drains the
// socket in batches; for each message it admits it (Dispatcher: checks,
// addresses, policy, rewrite) and queues the copies in the store; then it
// commits the batch once (group commit) together with its ledger records, answers each sender with its
// receipt ("stored" only now that it is on disk), and delivers queued
// messages to connected recipients in order, redelivering what is not acked.
#ifndef LIAISON_BROKER_TRANSPORT_REACTOR_H_
#define LIAISON_BROKER_TRANSPORT_REACTOR_H_

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "config/broker_config.h"
#include "core/admission.h"
#include "liaison/keys.h"
#include "core/commit.h"
#include "delivery/windows.h"
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

// Counters read by operators (logged at shutdown; exported as metrics later).
struct ReactorStats {
  std::atomic<uint64_t> messages_in{0};
  std::atomic<uint64_t> messages_rejected{0};
  std::atomic<uint64_t> deliveries{0};
  std::atomic<uint64_t> duplicates{0};
  std::atomic<uint64_t> busy{0};  // messages refused over an agency's rate or in-flight limit
  std::atomic<uint64_t> hellos_refused{0};  // HELLOs over an agency's HELLO rate
  std::atomic<uint64_t> stored{0};
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> commit_failures{0};
  std::atomic<uint64_t> redeliveries{0};
  std::atomic<uint64_t> expired{0};
  std::atomic<uint64_t> ledger_failures{0};
  std::atomic<uint64_t> malformed_frames{0};
  std::atomic<uint64_t> handshake_failures{0};
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> revoked_messages{0};  // from connections whose key a reload removed
  std::atomic<uint64_t> retired_broker_key_messages{0};  // from connections made with a retired broker key
};

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

class Reactor {
 public:
  // `server_keys`: the current key first (its listen is config.listen), then
  // the previous keys.
  Reactor(BrokerConfig config, std::vector<ServerKey> server_keys,
          std::shared_ptr<const policy::PolicySet> policies, std::unique_ptr<store::Store> store,
          std::unique_ptr<store::Store> reader, std::unique_ptr<audit::Ledger> ledger, Metrics* metrics);
  ~Reactor();

  // Starts authentication and binds the ROUTER, one endpoint per server key
  // still valid. On success endpoint() is the current key's concrete
  // endpoint (a "*" port is resolved).
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
  // Queues ledger records that no message decided (policy versions going
  // live, refused reloads, DPO key pins). Safe from any thread; the reactor
  // adds them to the next batch within a second (OnTimer), so they commit
  // with the store like every other record.
  void RecordEvents(std::vector<audit::Entry> events);
  // An operator's purge or requeue of set-aside copies (liaison queues), from
  // another thread (the admin socket's). The reactor takes it within a second
  // (OnTimer), commits the change with a ledger record per copy in one store
  // batch, and answers. Waits at most `timeout`; Unavailable if the reactor
  // stopped, did not take it in time (then nothing was done), or the commit
  // failed.
  StatusOr<SetAsideOutcome> ActOnSetAside(const SetAsideRequest& request, std::chrono::milliseconds timeout);

  const ReactorStats& stats() const { return stats_; }

 private:
  // One live connection of an agency that asked for deliveries.
  struct Receiver {
    std::string routing_id;
    int fd = -1;      // for disconnect logs only
    std::string key;  // the Z85 key it authenticated with
    std::string domain;  // the broker key (ZAP domain) it connected with
  };

  void HandleRouterMessage(std::vector<zmq::message_t>& frames);
  // `key`: the public key (Z85) the connection authenticated with.
  void HandleHello(const Agency& agency, const std::string& key, const std::string& domain,
                   const std::string& routing_id, int fd, const zmq::message_t& body);
  // True if connections made with the broker key of ZAP `domain` are served.
  bool DomainLive(std::string_view domain, int64_t now_ms) const;
  // Closes the endpoints of previous keys whose time is up.
  void RetireDueKeys(int64_t now_ms);
  // ReceiverOf's non-const core: drops receivers whose key a reload revoked.
  const std::string* LiveReceiverOf(const std::string& agency);
  void HandleSend(const policy::PolicySet& policies, const Agency& agency,
                  const std::string& routing_id, const zmq::message_t& body);
  void HandleAck(const Agency& agency, const zmq::message_t& body, const std::string& routing_id);
  void HandleMonitorEvent();
  // Ends a batch: commits the store, then sends the batch's receipts and
  // deliveries. On a failed commit every sender of the batch is told
  // "unavailable" and nothing of the batch counts as stored.
  // Ends a drain of the socket: submits the forming batch if no commit
  // runs (else it goes when that one returns). `checkpoint`: seal the
  // ledger with a signed checkpoint.
  void FinishBatch(bool checkpoint = false);
  void SubmitForming(bool checkpoint);
  // A batch the writer is committing: what to do once it returns.
  struct Reply;
  struct Committing;
  void OnCommitted(const Status& result);
  // After a batch's commit (or its refusal): keeps or undoes its ledger
  // records, answers its senders ("unavailable" for all on failure), and
  // delivers.
  void Finish(Committing c, const Status& result);
  // A barrier: returns when everything decided so far is committed (and
  // answered), so that the store reader sees it.
  void Drain(bool checkpoint = false);
  static std::string ReceiptKey(const std::string& sender, const std::string& id);
  // Sends queued messages to `recipient` while its window has room.
  void Pump(const std::string& recipient);
  void FlushNotices(const std::string& agency);
  void OnTimer();
  // The agency's newest receiver connection, or nullptr.
  const std::string* ReceiverOf(const std::string& agency) const;
  enum class SendResult { kSent, kFull, kGone };
  // Sends [routing_id, command, body] without blocking.
  SendResult SendTo(const std::string& routing_id, std::string_view command, const void* data,
                    size_t size);

  BrokerConfig config_;
  std::vector<ServedKey> served_keys_;  // [0] is the current key
  std::shared_ptr<const policy::PolicySet> policies_;  // atomic_load / atomic_store only
  Dispatcher dispatcher_;

  zmq::context_t context_;
  ZapHandler zap_;
  std::unique_ptr<zmq::socket_t> router_;
  std::unique_ptr<zmq::socket_t> monitor_;
  int wake_fd_ = -1;  // eventfd written by Stop()
  std::string endpoint_;

  std::unordered_map<std::string, std::vector<Receiver>> receivers_;  // by agency id
  std::unordered_map<int, std::string> agency_by_fd_;                 // for disconnect logs

  std::unique_ptr<store::Store> store_;   // the writer's (used on its thread only)
  std::unique_ptr<store::Store> reader_;  // this thread's reads: committed data only
  std::unique_ptr<Committer> committer_;  // after store_: stops before it
  std::unique_ptr<audit::Ledger> ledger_;
  Metrics* metrics_;  // not owned; outlives the reactor
  std::chrono::steady_clock::time_point last_checkpoint_ = std::chrono::steady_clock::now();
  std::unordered_map<std::string, int64_t> queue_depth_;  // queued messages per recipient
  DeliveryWindows windows_;  // what each recipient's receiver has and has not acked
  // The batch being built: replies to send once it is committed.
  struct Reply {
    std::string routing_id;
    std::vector<uint8_t> receipt;
    std::string message_id;
    std::string sender;
    std::chrono::steady_clock::time_point received = std::chrono::steady_clock::now();
  };
  struct Committing {
    std::vector<Reply> replies;
    std::set<std::string> touched, notice_for;
    std::vector<std::string> receipt_keys;  // in uncommitted_receipts_
    std::vector<int64_t> notices_sent;      // in notices_sending_
    bool ledger_written = false;
    uint64_t trim_to = 0;
  };
  std::optional<Committing> committing_;
  // The batch forming while another commits: its writes, and below, its
  // replies and the recipients and senders to serve once it is committed.
  store::WriteBatch forming_;
  size_t forming_messages_ = 0;
  std::vector<std::string> forming_receipt_keys_;
  // Receipts of the forming and the committing batch, by ReceiptKey: a
  // resend is recognised before its original is committed.
  std::unordered_map<std::string, std::vector<uint8_t>> uncommitted_receipts_;
  std::set<int64_t> notices_sending_;  // notices sent whose deletion is not yet committed
  uint64_t ledger_synced_ = 0;         // the ledger file is durable up to here
  std::vector<Reply> replies_;
  std::set<std::string> touched_;     // recipients to pump after the commit
  std::set<std::string> window_room_;  // recipients whose acks made room: pumped after the drain
  std::set<std::string> notice_for_;  // agencies with notices to send after the commit
  size_t batch_messages_ = 0;
  // Abuse limits per sending agency (limits.rate_per_agency and friends).
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled{};
    // Refills at `per_second` up to `burst`, then takes one token if there
    // is one.
    bool Take(double burst, double per_second, std::chrono::steady_clock::time_point now);
  };
  std::unordered_map<std::string, Bucket> buckets_;
  // HELLOs per agency: a flood is answered `busy`, and logged once per
  // interval rather than once per HELLO (docs/protocol.md §3).
  struct HelloLimit {
    Bucket bucket;
    uint64_t refused = 0;  // since the last hello_flood line
    std::chrono::steady_clock::time_point logged{};
  };
  std::unordered_map<std::string, HelloLimit> hello_limits_;  // by connection (routing id)
  // True if the connection `routing_id` of `agency` may say HELLO now; logs
  // a flood. Per connection: an agency's many workers reconnecting at once
  // (after a broker restart) each say HELLO once and are all welcomed.
  bool HelloAllowed(const std::string& agency, const std::string& routing_id);
  std::unordered_map<std::string, uint64_t> batch_in_flight_;  // this batch's messages per agency
  // True if `agency` may send one more message now; takes a token.
  bool WithinLimits(const std::string& agency);
  bool depths_stale_ = false;  // queue_depth_ must be re-read from the store
  uint64_t timer_ticks_ = 0;
  uint64_t ledger_trimmed_ = 0;  // the store forgot the ledger records up to here

  ReactorStats stats_;
  std::mutex events_mu_;
  std::vector<audit::Entry> events_;  // GUARDED_BY(events_mu_): from RecordEvents
  // Operators' set-aside actions waiting for the reactor (ActOnSetAside).
  struct SetAsideCall;
  std::vector<std::shared_ptr<SetAsideCall>> set_aside_calls_;  // GUARDED_BY(events_mu_)
  bool stopped_ = false;                                        // GUARDED_BY(events_mu_)
  void HandleSetAsideCalls();
  StatusOr<SetAsideOutcome> ApplySetAside(const SetAsideRequest& request);
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_TRANSPORT_REACTOR_H_
