// liaison's full path for the comparison bench: the real liaison-broker
// process (CURVE, ZAP, verify, route, policy decision and rewrite, ledger,
// durable group commit in SQLite) under the example policies (policies/),
// with agents of the example agencies exit-mombasa (sender) and
// youth-welfare-mombasa (receiver).
#ifndef LIAISON_BENCH_LIAISON_PEER_H_
#define LIAISON_BENCH_LIAISON_PEER_H_

#include <memory>
#include <string>

#include "integration/broker_process.h"
#include "load.h"

namespace liaison::bench {

struct LiaisonSetup {
  std::string policies_source;  // the repository's policies/ folder
  // Registered agencies besides the example ones (copies of
  // youth-welfare-mombasa under new ids and keys), for the scaling curve.
  size_t extra_agencies = 0;
  // Release rules the sender has before the one that matches: copies of it
  // for another region, each evaluated and refused for every message.
  size_t extra_rules = 0;
};

// The broker with its own folder (removed on destruction) and keys.
class LiaisonBroker {
 public:
  // Writes the policies and config and starts the broker (logging at info,
  // as deployed). Fails with the broker's log if it does not start.
  static StatusOr<std::unique_ptr<LiaisonBroker>> Start(const LiaisonSetup& setup);
  ~LiaisonBroker();
  void Stop();
  pid_t pid() const { return broker_->pid(); }
  AgentOptions SenderOptions() const;
  AgentOptions ReceiverOptions() const;

 private:
  LiaisonBroker() = default;
  testing::TempDir dir_;
  std::unique_ptr<testing::BrokerProcess> broker_;
  testing::TestAgency sender_, receiver_;
};

// A CaseReferral from policies/tests/messages/01-exit-to-youth-welfare.json
// addressed to youth-welfare-mombasa, its counselling notes padded so that
// the envelope is `size` bytes (within a few bytes of alignment).
StatusOr<std::vector<uint8_t>> ReferralOfSize(const std::string& policies_source, size_t size);

// Pipelined agents: the sender posts `referral` under ids numbered by seq
// and counts "stored" receipts (any other code is an error); the receiver
// acks each delivery.
StatusOr<std::unique_ptr<SenderClient>> ConnectLiaisonSender(const LiaisonBroker& broker,
                                                             std::vector<uint8_t> referral);
StatusOr<std::unique_ptr<ReceiverClient>> ConnectLiaisonReceiver(const LiaisonBroker& broker);

}  // namespace liaison::bench

#endif  // LIAISON_BENCH_LIAISON_PEER_H_
