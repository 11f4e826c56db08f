// Webhook delivery: when the gateway config has a `webhook:`, each message
// delivered to the agency is POSTed (Envelope JSON) to the agency system's
// HTTPS URL, oldest first, one at a time. A 2xx status line with its headers
// is a delivery, whatever happens to the stream after it (a receiver that
// closes without TLS close_notify has the message all the same), and acks
// the message to the broker. Anything else (or no answer within timeout_ms)
// is retried with exponential backoff from retry_initial_ms up to
// retry_max_ms, at most max_attempts times in all. Then the message is a
// dead letter: recorded in the GatewayStore, logged (ids only), counted in
// /healthz, and not posted again until the gateway restarts. It is never
// acked, so the broker keeps it (and redelivers it to the restarted gateway,
// or expires it and tells the sender): nothing acknowledged is lost.
#ifndef LIAISON_AGENTS_GATEWAY_WEBHOOK_H_
#define LIAISON_AGENTS_GATEWAY_WEBHOOK_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <set>
#include <utility>

#include "broker_link.h"
#include "gateway_config.h"
#include "gateway_store.h"

namespace liaison::gateway {

class Webhook {
 public:
  Webhook(WebhookOptions options, Inbox& inbox, BrokerLink& link, GatewayStore& store);
  ~Webhook();  // stops

  // Loads the CA (ca_file or the system's) and starts the delivery thread.
  Status Start();
  void Stop();
  // A message arrived in the Inbox (any thread).
  void Notify();

 private:
  struct Result {
    int status = 0;     // HTTP status; 0 when there was none
    std::string error;  // why there was none
  };
  using Key = std::pair<std::string, std::string>;  // (sender, id)
  Result Post(const std::string& message_id, const std::string& body);
  void Loop();
  void Delivered(const Key& key, int status, int attempts);
  void DeadLetter(const Key& key, const Result& last, int attempts);
  void ShredIfErasure(const Inbox::Item& item);

  WebhookOptions options_;
  Inbox& inbox_;
  BrokerLink& link_;
  GatewayStore& store_;
  std::set<Key> dead_;      // given up on in this run; touched by the loop only
  std::set<Key> recorded_;  // dead letters in the store (this run's or earlier)
  struct Tls;
  std::unique_ptr<Tls> tls_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  bool notified_ = false;
  std::thread thread_;
};

}  // namespace liaison::gateway

#endif  // LIAISON_AGENTS_GATEWAY_WEBHOOK_H_
