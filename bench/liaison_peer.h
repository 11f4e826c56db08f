// liaison's full path for the comparison bench: the real liaison-broker
// process (CURVE, ZAP, verify, route, policy decision and rewrite, ledger,
// durable group commit in SQLite) under the example policies (policies/),
// with agents of the example agencies exit-mombasa (sender) and
// youth-welfare-mombasa (receiver), or of several sender/receiver pairs of
// bench agencies (copies of the two) for the many-agency shape.
#ifndef LIAISON_BENCH_LIAISON_PEER_H_
#define LIAISON_BENCH_LIAISON_PEER_H_

#include <memory>
#include <string>
#include <vector>

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
  // If not 0: this many sender agencies bench-sender-K (copies of
  // exit-mombasa, with its rules) and as many receivers bench-receiver-K
  // (copies of youth-welfare-mombasa), each with its own key; sender K
  // sends to receiver K. The broker's pairs are then these, not the example one.
  size_t pairs = 0;
  // If set: broker.yaml's store settings instead of the SQLite file (see
  // testing::BrokerProcess), e.g. a PostgreSQL database's.
  std::string store_settings{};
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
  // The sender/receiver pairs: the example one, or LiaisonSetup::pairs of them.
  size_t pairs() const { return senders_.size(); }
  // `pair` < pairs().
  const std::string& ReceiverId(size_t pair) const { return receivers_[pair].id; }
  AgentOptions SenderOptions(size_t pair) const;
  AgentOptions ReceiverOptions(size_t pair) const;

 private:
  LiaisonBroker() = default;
  testing::TempDir dir_;
  std::unique_ptr<testing::BrokerProcess> broker_;
  std::vector<testing::TestAgency> senders_, receivers_;  // by pair
};

// A CaseReferral from policies/tests/messages/01-exit-to-youth-welfare.json
// addressed to `receiver` (youth-welfare-mombasa unless given), its
// counselling notes padded so that the envelope is `size` bytes (within a
// few bytes of alignment).
StatusOr<std::vector<uint8_t>> ReferralOfSize(const std::string& policies_source, size_t size,
                                              const std::string& receiver = "youth-welfare-mombasa");

// Pipelined agents of pair `pair`: the sender posts `referral` (addressed to
// the pair's receiver) under ids numbered by seq and counts "stored"
// receipts (any other code is an error); the receiver acks each delivery.
StatusOr<std::unique_ptr<SenderClient>> ConnectLiaisonSender(const LiaisonBroker& broker, size_t pair,
                                                             std::vector<uint8_t> referral);
StatusOr<std::unique_ptr<ReceiverClient>> ConnectLiaisonReceiver(const LiaisonBroker& broker, size_t pair);

}  // namespace liaison::bench

#endif  // LIAISON_BENCH_LIAISON_PEER_H_
