// The message core: what the broker does with the messages the transport
// hands it, in stages over a batch.
//
//   admit   (per message: limits, dedupe, Dispatcher: verify, decide, rewrite)
//   commit  (per batch: the copies, receipts, disclosures, notices and the
//            ledger's records in one store transaction, on the writer's
//            thread; the next batch forms meanwhile)
//   answer  (receipts, only once their batch's commit returned; "unavailable"
//            to every sender of a batch whose commit failed)
//   deliver (committed copies to connected recipients in order, within
//            their windows; redelivery of what is not acked; notices)
//
// The core runs on the transport's thread and reaches connections only
// through a Link; it owns the store, the writer and the ledger.
#ifndef LIAISON_BROKER_CORE_PIPELINE_H_
#define LIAISON_BROKER_CORE_PIPELINE_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/broker_config.h"
#include "core/admission.h"
#include "core/commit.h"
#include "core/link.h"
#include "core/receipt_filter.h"
#include "core/token_bucket.h"
#include "delivery/windows.h"
#include "liaison/status.h"
#include "store/store.h"

namespace liaison::audit {
class Ledger;
struct Entry;
}  // namespace liaison::audit
namespace liaison::policy {
class PolicySet;
}

namespace liaison::broker {

class Metrics;
struct SetAsideRequest;  // admin/operator_server.h
struct SetAsideOutcome;

// Counters read by operators (logged at shutdown, exported as metrics).
// Written on the core's thread, read from any.
struct BrokerStats {
  std::atomic<uint64_t> messages_in{0};
  std::atomic<uint64_t> messages_rejected{0};
  std::atomic<uint64_t> deliveries{0};
  std::atomic<uint64_t> duplicates{0};
  // Message ids read from the store as possible resends: those the receipt
  // filter could not rule out (resends, and under 1% of new ids).
  std::atomic<uint64_t> receipt_lookups{0};
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

class Pipeline {
 public:
  using PolicySource = std::function<std::shared_ptr<const policy::PolicySet>()>;

  // `store` is the writer's connection, `reader` this thread's (committed
  // data only). `metrics`, `stats` and `link` are not owned and outlive the
  // pipeline; `policies` gives the set in force (any thread may swap it).
  Pipeline(const BrokerConfig& config, std::unique_ptr<store::Store> store, std::unique_ptr<store::Store> reader,
           std::unique_ptr<audit::Ledger> ledger, Metrics* metrics, BrokerStats* stats, Link* link,
           PolicySource policies);
  ~Pipeline();

  // Starts the writer and reads the queue depths. Fails if either fails;
  // nothing else may be called then.
  Status Start();
  // Readable when the writer has a batch's result: call OnCommitReady().
  int commit_fd() const;
  void OnCommitReady();

  // True if the transport should read more messages now: false while a
  // commit runs and the next batch is already full (back-pressure).
  bool accepting() const;
  // A drain of the socket begins; batch_messages() counts what it handed in.
  void BeginDrain() { batch_messages_ = 0; }
  size_t batch_messages() const { return batch_messages_; }

  // One SEND of the authenticated `sender` (an agency of `policies`) on
  // connection `routing_id`, decided under `policies`: over its agency's
  // limits it is answered `busy` at once, else admitted with the rest of
  // the drain at FinishBatch(). Its receipt leaves once its batch commits.
  void HandleSend(std::shared_ptr<const policy::PolicySet> policies, const Agency& sender,
                  const std::string& routing_id, std::span<const uint8_t> body);
  // One ACK of `agency` on connection `routing_id`.
  void HandleAck(const Agency& agency, std::span<const uint8_t> body, const std::string& routing_id);
  // A receiver connection of `agency` said HELLO: it gets everything not
  // yet acked, from the start, in order, and the notices waiting for it.
  void ReceiverConnected(const std::string& agency);
  // Ends a drain of the socket: submits the forming batch if no commit
  // runs (else it goes when that one returns).
  void FinishBatch(bool checkpoint = false);
  // Once a second: events and operators' calls, expiry, redelivery, the
  // ledger's background sync, metrics.
  void OnTimer();
  // Commits everything decided so far with a checkpoint, answers it, and
  // refuses what operators ask from now on. The last call.
  void Shutdown();

  // Queues ledger records that no message decided (policy versions going
  // live, refused reloads, DPO key pins). Safe from any thread; they join
  // the next batch within a second (OnTimer).
  void RecordEvents(std::vector<audit::Entry> events);
  // An operator's purge or requeue of set-aside copies, from another
  // thread. Taken within a second (OnTimer), committed with a ledger record
  // per copy in one batch. Waits at most `timeout`; Unavailable if the core
  // stopped, did not take it in time (then nothing was done), or the commit
  // failed.
  StatusOr<SetAsideOutcome> ActOnSetAside(const SetAsideRequest& request, std::chrono::milliseconds timeout);

  // The agencies the metrics list as connected are the transport's; the
  // queue depths are the core's.
  const std::unordered_map<std::string, int64_t>& queue_depths() const { return queue_depth_; }

 private:
  struct Reply;
  struct Committing;
  struct SetAsideCall;

  // A SEND within its agency's limits, waiting for the end of the drain.
  struct Arrival {
    std::shared_ptr<const policy::PolicySet> policies;
    const Agency* sender;  // of `policies`
    std::string routing_id;
    std::vector<uint8_t> body;
    // Of `body`, as wire::VerifyEnvelope makes it (its envelope null if
    // the body does not verify or is over the size limit).
    wire::EnvelopeCheck check = {};
    // The thread the message's derived_from names, read with the drain's
    // others; nullopt: not read (Admit reads it, if it names one).
    std::optional<StatusOr<std::optional<store::Thread>>> thread = std::nullopt;
  };
  // The admit stage over the drain's SENDs: one store lookup for the
  // receipts of all of them (resends) and one for the threads they derive
  // from, then each is decided in order.
  void AdmitArrivals();
  // `looked_up`: the store's receipt for the arrival's (sender, id), if the
  // caller read it; else Admit reads it.
  void Admit(const Arrival& arrival, std::optional<StatusOr<std::optional<std::vector<uint8_t>>>> looked_up);
  void SubmitForming(bool checkpoint);
  void OnCommitted(CommitResult result);
  // After a batch's commit (or its refusal): keeps or undoes its ledger
  // records, answers its senders ("unavailable" for all on failure), and
  // delivers.
  void Finish(Committing c, CommitResult committed);
  // A barrier: returns when everything decided so far is committed (and
  // answered), so that the store reader sees it.
  void Drain(bool checkpoint = false);
  static std::string ReceiptKey(const std::string& sender, const std::string& id);
  // Sends queued messages to `recipient` while its window has room.
  void Pump(const std::string& recipient);
  void FlushNotices(const std::string& agency);
  // Response deadlines past due: each fires once (notices to the sender,
  // the recipient and the sender's escalation contact, a ledger record),
  // in the next batch; and the oldest open clock's age for the metrics.
  void FireClocks(int64_t now);
  void FireClock(const policy::PolicySet& set, const store::Clock& clock, int64_t now);
  // Starts a background sync of the ledger file if none runs; learns what
  // the last one made durable.
  void SyncLedger();
  // Loads pages of stored receipts' keys into receipt_filter_ for up to
  // `budget` (at least one page), until the scan is done.
  void LoadReceiptKeys(std::chrono::milliseconds budget);
  // True if `agency` may send one more message now; takes a token.
  bool WithinLimits(const std::string& agency);
  void HandleSetAsideCalls();
  StatusOr<SetAsideOutcome> ApplySetAside(const SetAsideRequest& request);
  std::shared_ptr<const policy::PolicySet> policies() const { return policies_(); }

  const BrokerConfig config_;
  Dispatcher dispatcher_;
  std::unique_ptr<store::Store> store_;   // the writer's (used on its thread only)
  std::unique_ptr<store::Store> reader_;  // this thread's reads: committed data only
  std::unique_ptr<audit::Ledger> ledger_;
  // After store_ and ledger_, which its thread writes: it stops (finishing a
  // submitted batch) before either is destroyed.
  std::unique_ptr<Committer> committer_;
  Metrics* metrics_;
  BrokerStats& stats_;
  Link& link_;
  PolicySource policies_;

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
    std::vector<audit::Entry> events;       // RecordEvents' records in this batch
    uint64_t trim_to = 0;
    int64_t purged_before_ms = 0;  // the batch's purge cut-off (0: none)
    uint64_t forget_through = 0;   // ReceiptFilter::Seal's answer for that purge
  };
  std::optional<Committing> committing_;
  // The batch forming while another commits: its writes, and below, its
  // replies and the recipients and senders to serve once it is committed.
  store::WriteBatch forming_;
  size_t forming_messages_ = 0;
  std::vector<std::string> forming_receipt_keys_;
  std::vector<audit::Entry> forming_events_;  // RecordEvents' records in the forming batch
  // Receipts of the forming and the committing batch, by ReceiptKey: a
  // resend is recognised before its original is committed.
  std::unordered_map<std::string, std::vector<uint8_t>> uncommitted_receipts_;
  // Every key with a receipt in the store or in a batch: a key it rules out
  // is new without a store read. Used once every stored key is loaded (from
  // Start on, a page at a time at each tick; receipt_scan_ is where the scan
  // is, while it goes on); until then every key is looked up.
  ReceiptFilter receipt_filter_;
  bool receipt_filter_loaded_ = false;
  // True if (sender, id) was never given a receipt, known without a store
  // read: the filter is loaded and rules the key out. False means "look it
  // up" (maybe stored, or the filter is still loading).
  bool SurelyNew(std::string_view sender, std::string_view id) const {
    return receipt_filter_loaded_ && !receipt_filter_.MayContain(sender, id);
  }
  std::optional<store::ReceiptKeyCursor> receipt_scan_;
  std::set<int64_t> notices_sending_;  // notices sent whose deletion is not yet committed
  uint64_t ledger_synced_ = 0;         // the ledger file is durable up to here
  std::vector<Reply> replies_;
  std::set<std::string> touched_;      // recipients to pump after the commit
  std::set<std::string> window_room_;  // recipients whose acks made room: pumped after the drain
  std::set<std::string> notice_for_;   // agencies with notices to send after the commit
  size_t batch_messages_ = 0;
  std::vector<Arrival> arrivals_;  // this drain's SENDs, admitted at FinishBatch()
  uint64_t drains_ = 0;            // barriers (Drain()) so far
  // Abuse limits per sending agency (limits.rate_per_agency and friends).
  std::unordered_map<std::string, TokenBucket> buckets_;
  std::unordered_map<std::string, uint64_t> batch_in_flight_;  // this batch's messages per agency
  bool depths_stale_ = false;  // queue_depth_ must be re-read from the store
  uint64_t timer_ticks_ = 0;
  uint64_t ledger_trimmed_ = 0;  // the store forgot the ledger records up to here

  std::mutex events_mu_;
  std::vector<audit::Entry> events_;  // GUARDED_BY(events_mu_): from RecordEvents
  // Operators' set-aside actions waiting for the core (ActOnSetAside).
  std::vector<std::shared_ptr<SetAsideCall>> set_aside_calls_;  // GUARDED_BY(events_mu_)
  bool stopped_ = false;                                        // GUARDED_BY(events_mu_)
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_CORE_PIPELINE_H_
