// Webhook delivery: when the gateway config has a `webhook:`, each message
// delivered to the agency is POSTed (Envelope JSON) to the agency system's
// HTTPS URL, oldest first, one at a time. A 2xx answer acks the message to
// the broker; anything else (or no answer within timeout_ms) is retried with
// exponential backoff from retry_initial_ms up to retry_max_ms, for as long
// as it takes: the broker holds the message until it is acked.
#ifndef LIAISON_AGENTS_GATEWAY_WEBHOOK_H_
#define LIAISON_AGENTS_GATEWAY_WEBHOOK_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "broker_link.h"
#include "gateway_config.h"

namespace liaison::gateway {

class Webhook {
 public:
  Webhook(WebhookOptions options, Inbox& inbox, BrokerLink& link);
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
  Result Post(const std::string& message_id, const std::string& body);
  void Loop();

  WebhookOptions options_;
  Inbox& inbox_;
  BrokerLink& link_;
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
