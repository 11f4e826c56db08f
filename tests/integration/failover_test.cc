// Agents and the gateway fail over between the brokers of one deployment
// (`brokers: [...]`): real broker processes on loopback with CURVE, sharing
// one broker key, each with its own SQLite store (the shared PostgreSQL
// store of a real high-availability pair is tests/postgres' business). A
// dead first endpoint is a port bound but not listening; a `standby` broker
// is a small CURVE ROUTER in this process answering every request with code
// 503 (docs/protocol.md section 7), as a standby broker does.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <sstream>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "integration/gateway_process.h"
#include "liaison/agent.h"
#include "liaison/outbox.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;

// A loopback port bound but not listening: a connection to it is refused,
// and no other test can take the port while this object lives.
class DeadEndpoint {
 public:
  DeadEndpoint() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), size) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
      throw std::runtime_error("bind failed");
    }
    endpoint_ = "tcp://127.0.0.1:" + std::to_string(ntohs(address.sin_port));
  }
  ~DeadEndpoint() { ::close(fd_); }
  const std::string& endpoint() const { return endpoint_; }

 private:
  int fd_;
  std::string endpoint_;
};

// A standby broker as agents see it: the deployment's CURVE key, and a
// RECEIPT with code `standby` for every HELLO, SEND and ACK, never WELCOME.
class StandbyServer {
 public:
  explicit StandbyServer(const CurveKeyPair& broker_keys) : router_(context_, zmq::socket_type::router) {
    router_.set(zmq::sockopt::curve_server, 1);
    router_.set(zmq::sockopt::curve_secretkey, broker_keys.secret_z85);
    router_.set(zmq::sockopt::linger, 0);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { Loop(); });
  }
  ~StandbyServer() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  int hellos() const { return hellos_.load(); }
  int sends() const { return sends_.load(); }

 private:
  void Loop() {
    while (!stop_) {
      zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 50ms);
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(router_, std::back_inserter(frames), zmq::recv_flags::dontwait) ||
          frames.size() != 3) {
        continue;
      }
      const std::string command = frames[1].to_string();
      std::string id;
      if (command == wire::kHello) ++hellos_;
      if (command == wire::kSend) {
        ++sends_;
        // A frame's bytes need not be aligned for a FlatBuffer (UBSan says so).
        std::vector<uint8_t> storage;
        std::span<const uint8_t> body =
            wire::Aligned({frames[2].data<uint8_t>(), frames[2].size()}, storage);
        if (const wire::Envelope* e = wire::VerifyEnvelope(body); e && e->id()) id = e->id()->str();
      }
      flatbuffers::FlatBufferBuilder fbb;
      wire::FinishReceiptBuffer(
          fbb, wire::CreateReceiptDirect(fbb, id.c_str(), wire::Code::standby,
                                         "this broker is a standby; the active broker is another one"));
      std::array<zmq::const_buffer, 3> reply = {
          zmq::buffer(frames[0].data(), frames[0].size()), zmq::buffer(wire::kReceipt),
          zmq::buffer(fbb.GetBufferPointer(), fbb.GetSize())};
      (void)zmq::send_multipart(router_, reply, zmq::send_flags::dontwait);
    }
  }

  zmq::context_t context_{1};
  zmq::socket_t router_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> hellos_{0}, sends_{0};
  std::thread thread_;
};

// The agent library's log lines, for checking event=broker_failover.
class CapturedLog {
 public:
  CapturedLog() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(text_);
    sink->set_pattern("%v");
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", sink));
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string text() {
    spdlog::default_logger()->flush();
    return text_.str();
  }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream text_;
};

std::vector<uint8_t> UpdateBytes(const std::string& id, const std::string& to) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-HA-1";
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  wire::CaseUpdateT u;
  u.notes = "progress";
  e.payload.Set(u);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

class FailoverTest : public ::testing::Test {
 protected:
  // Two brokers of one deployment: the same agencies and broker key, each
  // its own folder and store.
  void StartBrokers() {
    first_ = std::make_unique<BrokerProcess>(first_dir_, std::vector<TestAgency>{a_, b_});
    second_ = std::make_unique<BrokerProcess>(second_dir_, std::vector<TestAgency>{a_, b_});
    ASSERT_TRUE(second_->UseBrokerKeys(first_->broker_keys()).ok());
    Status st = first_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
    st = second_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  // Options for `who` naming `endpoints`, with short failover bounds (long
  // enough for a handshake on a loaded test machine).
  AgentOptions Options(const TestAgency& who, wire::Role role, std::vector<std::string> endpoints) {
    AgentOptions o = (first_ ? *first_ : *second_).AgentFor(who, role);
    o.broker_endpoint.clear();
    o.broker_endpoints = std::move(endpoints);
    o.connect_timeout = 1000ms;
    o.welcome_timeout = 1000ms;
    o.silence_timeout = 2000ms;
    return o;
  }
  std::unique_ptr<Agent> Connect(AgentOptions options) {
    auto agent = Agent::Connect(std::move(options));
    if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
    return std::move(*agent);
  }

  TempDir first_dir_, second_dir_, work_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  std::unique_ptr<BrokerProcess> first_, second_;
};

TEST_F(FailoverTest, AFirstEndpointWithNothingListeningLeadsToTheSecond) {
  StartBrokers();
  DeadEndpoint dead;
  CapturedLog log;
  auto receiver = Connect(Options(b_, wire::Role::receiver, {dead.endpoint(), second_->endpoint()}));
  Status ready = receiver->WaitReady(10s);
  ASSERT_TRUE(ready.ok()) << ready.ToString();
  EXPECT_EQ(receiver->current_endpoint(), second_->endpoint());

  auto sender = Connect(Options(a_, wire::Role::sender, {dead.endpoint(), second_->endpoint()}));
  auto receipt = sender->Send(UpdateBytes("ha-first-dead-1", "b"));
  ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
  EXPECT_EQ((*receipt)->code(), wire::Code::ok);
  EXPECT_EQ((*receipt)->message_id()->str(), "ha-first-dead-1");
  EXPECT_EQ(sender->current_endpoint(), second_->endpoint());
  EXPECT_GE(sender->failovers(), 1u);

  auto message = receiver->Receive(10s);
  ASSERT_TRUE(message.ok() && message->has_value());
  EXPECT_EQ((**message)->id()->str(), "ha-first-dead-1");
  ASSERT_TRUE(receiver->Ack("a", "ha-first-dead-1").ok());
  EXPECT_NE(log.text().find("event=broker_failover from=" + dead.endpoint() + " to=" +
                            second_->endpoint() + " reason=no_handshake"),
            std::string::npos)
      << log.text();
}

TEST_F(FailoverTest, AnEndpointServingAnotherKeyIsLeft) {
  // Its handshakes fail and disconnect over and over: each failure must not
  // restart the handshake bound.
  second_ = std::make_unique<BrokerProcess>(second_dir_, std::vector<TestAgency>{a_, b_});
  ASSERT_TRUE(second_->Start().ok());
  auto other_key = GenerateCurveKeyPair();
  ASSERT_TRUE(other_key.ok());
  StandbyServer stranger(*other_key);
  CapturedLog log;
  auto sender = Connect(Options(a_, wire::Role::sender, {stranger.endpoint(), second_->endpoint()}));
  auto receipt = sender->Send(UpdateBytes("ha-other-key-1", "b"));
  ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
  EXPECT_EQ((*receipt)->code(), wire::Code::ok);
  EXPECT_EQ(stranger.hellos(), 0);
  EXPECT_NE(log.text().find("event=broker_failover from=" + stranger.endpoint() + " to=" +
                            second_->endpoint() + " reason=no_handshake"),
            std::string::npos)
      << log.text();
}

TEST_F(FailoverTest, AnOutboxResendsToTheOtherBrokerWhenTheActiveOneIsKilled) {
  StartBrokers();
  CapturedLog log;
  const std::vector<std::string> both = {first_->endpoint(), second_->endpoint()};
  auto receiver = Connect(Options(b_, wire::Role::receiver, both));
  ASSERT_TRUE(receiver->WaitReady(10s).ok());
  auto sender = Connect(Options(a_, wire::Role::sender, both));
  auto box = Outbox::Open(work_.file("outbox.db"), work_.file("outbox.key"));
  ASSERT_TRUE(box.ok()) << box.status().ToString();
  constexpr int kMessages = 10, kBeforeKill = 4;
  std::set<std::string> ids;
  for (int i = 0; i < kMessages; ++i) {
    const std::string id = "ha-outbox-" + std::to_string(i);
    ids.insert(id);
    ASSERT_TRUE((*box)->Add(UpdateBytes(id, "b")).ok());
  }

  // The active broker dies between two messages of the stream: the next
  // one goes to it and is never answered, so it is resent to the other.
  std::vector<std::string> answered;
  Status flushed = (*box)->Flush(*sender, [&](const ReceiptBuffer& r) {
    EXPECT_EQ(r->code(), wire::Code::ok);
    answered.push_back(r->message_id()->str());
    if (answered.size() == kBeforeKill) first_->Stop(SIGKILL);
  });
  ASSERT_TRUE(flushed.ok()) << flushed.ToString();
  EXPECT_EQ(std::set<std::string>(answered.begin(), answered.end()), ids);
  EXPECT_EQ(answered.size(), static_cast<size_t>(kMessages));
  EXPECT_EQ(*(*box)->Size(), 0);
  EXPECT_EQ(sender->current_endpoint(), second_->endpoint());
  // The message sent to the dead broker reached the other under its id.
  EXPECT_TRUE(second_->WaitForLog("ha-outbox-" + std::to_string(kBeforeKill))) << second_->log();
  EXPECT_NE(log.text().find("event=broker_failover from=" + first_->endpoint() + " to=" +
                            second_->endpoint()),
            std::string::npos)
      << log.text();

  // The receiver moved too and said HELLO again: what the second broker
  // stored is delivered.
  std::set<std::string> delivered;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    bool missing = false;
    for (int i = kBeforeKill; i < kMessages; ++i) missing |= !delivered.count("ha-outbox-" + std::to_string(i));
    if (!missing) break;
    auto message = receiver->Receive(500ms);
    ASSERT_TRUE(message.ok()) << message.status().ToString();
    if (!message->has_value()) continue;
    delivered.insert((**message)->id()->str());
    ASSERT_TRUE(receiver->Ack("a", (**message)->id()->str()).ok());
  }
  for (int i = kBeforeKill; i < kMessages; ++i) {
    EXPECT_TRUE(delivered.count("ha-outbox-" + std::to_string(i))) << i;
  }
  EXPECT_EQ(receiver->current_endpoint(), second_->endpoint());
}

TEST_F(FailoverTest, ABrokerThatFallsSilentUnderAWaitingMessageIsLeft) {
  StartBrokers();
  CapturedLog log;
  // Heartbeats far apart, so that the silence bound (2 s) is what notices.
  AgentOptions options = Options(a_, wire::Role::sender, {first_->endpoint(), second_->endpoint()});
  options.heartbeat = 10s;
  auto sender = Connect(options);
  auto before = sender->Send(UpdateBytes("ha-silent-1", "b"));
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_EQ(sender->current_endpoint(), first_->endpoint());

  first_->Signal(SIGSTOP);  // alive to TCP, silent to the agent
  auto after = sender->Send(UpdateBytes("ha-silent-2", "b"));
  first_->Signal(SIGCONT);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ((*after)->code(), wire::Code::ok);
  EXPECT_EQ((*after)->message_id()->str(), "ha-silent-2");
  EXPECT_EQ(sender->current_endpoint(), second_->endpoint());
  EXPECT_NE(log.text().find("event=broker_failover from=" + first_->endpoint() + " to=" +
                            second_->endpoint() + " reason=silence"),
            std::string::npos)
      << log.text();
}

// The gateway fails over between the brokers named in `where`: its agent
// config's `brokers:`, or its own gateway.yaml `brokers:` (the agent config
// then names only the first broker, so reaching the second shows that the
// gateway's list is the one used).
void GatewayMovesToTheOtherBroker(BrokerProcess* first_, BrokerProcess* second_, const TempDir& work_,
                                  const TestAgency& a_, GatewayProcess::BrokersIn where) {
  GatewayProcess gateway(work_, *first_, a_);
  gateway.set_brokers({first_->endpoint(), second_->endpoint()}, where);
  Status st = gateway.Start();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(gateway.WaitForLog(" broker=" +
                                 first_->endpoint() + "," + second_->endpoint()))
      << gateway.log();
  auto wait_stored = [&](const std::string& url) {
    HttpReply reply;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      reply = gateway.Call("GET", url);
      if (reply.status == 200) break;
      std::this_thread::sleep_for(100ms);
    }
    return reply;
  };
  auto post = [&](int i) {
    const std::string body = "{\"id\": \"ha-gw-" + std::to_string(i) +
                             "\", \"case_ref\": \"CASE-HA-2\", \"to\": [{\"agency\": \"b\"}], "
                             "\"payload_type\": \"CaseUpdate\", \"payload\": {\"notes\": \"n\"}}";
    HttpReply sent = gateway.Call("POST", "/v1/messages", body);
    EXPECT_EQ(sent.status, 202) << sent.body << sent.error;
    return JsonField(sent.body, "receipt_url");
  };
  for (int i = 0; i < 3; ++i) {
    HttpReply receipt = wait_stored(post(i));
    ASSERT_EQ(receipt.status, 200) << receipt.body;
    EXPECT_EQ(JsonField(receipt.body, "code"), "stored") << receipt.body;
  }
  ASSERT_EQ(first_->Stop(SIGKILL), -SIGKILL);
  std::vector<std::string> urls;
  for (int i = 3; i < 6; ++i) urls.push_back(post(i));
  for (const auto& url : urls) {
    HttpReply receipt = wait_stored(url);
    ASSERT_EQ(receipt.status, 200) << receipt.body << "\n" << gateway.log();
    EXPECT_EQ(JsonField(receipt.body, "code"), "stored") << receipt.body;
  }
  for (int i = 3; i < 6; ++i) EXPECT_TRUE(second_->WaitForLog("ha-gw-" + std::to_string(i)));
  EXPECT_TRUE(gateway.WaitForLog("event=broker_failover from=" + first_->endpoint() + " to=" +
                                 second_->endpoint()))
      << gateway.log();
}

TEST_F(FailoverTest, TheGatewayMovesToTheOtherBrokerAndItsMessagesGetReceipts) {
  StartBrokers();
  GatewayMovesToTheOtherBroker(first_.get(), second_.get(), work_, a_, GatewayProcess::BrokersIn::kAgentConfig);
}

TEST_F(FailoverTest, TheGatewaysOwnBrokersListReplacesTheAgentConfigsEndpoint) {
  StartBrokers();
  GatewayMovesToTheOtherBroker(first_.get(), second_.get(), work_, a_, GatewayProcess::BrokersIn::kGatewayConfig);
}

TEST_F(FailoverTest, AStandbyAnswerMovesTheAgentOnAndIsNeverTheResult) {
  second_ = std::make_unique<BrokerProcess>(second_dir_, std::vector<TestAgency>{a_, b_});
  StandbyServer standby(second_->broker_keys());
  ASSERT_TRUE(second_->Start().ok());
  CapturedLog log;
  auto receiver = Connect(Options(b_, wire::Role::receiver, {standby.endpoint(), second_->endpoint()}));
  ASSERT_TRUE(receiver->WaitReady(10s).ok());
  EXPECT_EQ(receiver->current_endpoint(), second_->endpoint());

  auto sender = Connect(Options(a_, wire::Role::sender, {standby.endpoint(), second_->endpoint()}));
  auto receipt = sender->Send(UpdateBytes("ha-standby-1", "b"));
  ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
  EXPECT_EQ((*receipt)->code(), wire::Code::ok);
  EXPECT_EQ((*receipt)->message_id()->str(), "ha-standby-1");
  EXPECT_GE(standby.hellos(), 2);
  EXPECT_NE(log.text().find("event=broker_failover from=" + standby.endpoint() + " to=" +
                            second_->endpoint() + " reason=standby"),
            std::string::npos)
      << log.text();
  auto message = receiver->Receive(10s);
  ASSERT_TRUE(message.ok() && message->has_value());
  EXPECT_EQ((**message)->id()->str(), "ha-standby-1");

  // Only a standby: no receipt is ever the result; the call runs out of
  // time saying what it tried.
  AgentOptions alone = Options(a_, wire::Role::sender, {standby.endpoint()});
  alone.receipt_timeout = 1500ms;
  auto stuck = Connect(alone)->Send(UpdateBytes("ha-standby-2", "b"));
  ASSERT_FALSE(stuck.ok());
  EXPECT_EQ(stuck.status().code(), Status::Code::kDeadlineExceeded) << stuck.status().ToString();
  EXPECT_GE(standby.sends(), 1);
}

TEST_F(FailoverTest, LiaisonSendTriesEveryBrokerInOrderBeforeGivingUp) {
  second_ = std::make_unique<BrokerProcess>(second_dir_, std::vector<TestAgency>{a_, b_});
  StandbyServer standby(second_->broker_keys());
  ASSERT_TRUE(second_->Start().ok());
  DeadEndpoint dead;
  ASSERT_TRUE(WriteCurveKeyPair(work_.file("keys"), "a", a_.keys).ok());
  ASSERT_TRUE(WriteCurveKeyPair(work_.file("keys"), "broker", second_->broker_keys()).ok());
  const std::string common =
      "broker_public_key_file: keys/broker.pub\nsecret_key_file: keys/a.key\n"
      "receipt_timeout_ms: 1000\nresend_interval_ms: 300\nconnect_timeout_ms: 500\n"
      "welcome_timeout_ms: 500\nsilence_timeout_ms: 1000\n";
  WriteText(work_.file("message.json"),
            "{\"case_ref\": \"CASE-HA-3\", \"to\": [{\"agency\": \"b\"}], "
            "\"payload_type\": \"CaseUpdate\", \"payload\": {\"notes\": \"n\"}}");

  // A dead broker and a standby: exit 1, naming both and why.
  WriteText(work_.file("none.yaml"),
            "brokers: [" + dead.endpoint() + ", " + standby.endpoint() + "]\n" + common);
  std::string out, err;
  int code = RunCommand({LIAISON_CLI_BIN, "send", "--config", work_.file("none.yaml"), work_.file("message.json")},
                        &out, &err);
  EXPECT_EQ(code, 1) << out << err;
  EXPECT_NE(err.find("no receipt from any of the 2 brokers"), std::string::npos) << err;
  EXPECT_NE(err.find(dead.endpoint() + " (no handshake within 500 ms)"), std::string::npos) << err;
  EXPECT_NE(err.find(standby.endpoint() + " (a standby)"), std::string::npos) << err;
  EXPECT_NE(err.find("liaison: event=broker_failover from=" + dead.endpoint()), std::string::npos) << err;
  EXPECT_EQ(out, "") << "a standby answer was printed as a receipt";

  // A dead broker, a standby, then the active one: stored, exit 0.
  WriteText(work_.file("third.yaml"), "brokers:\n  - " + dead.endpoint() + "\n  - " + standby.endpoint() +
                                          "\n  - " + second_->endpoint() + "\n" + common);
  code = RunCommand({LIAISON_CLI_BIN, "send", "--config", work_.file("third.yaml"), work_.file("message.json")},
                    &out, &err);
  EXPECT_EQ(code, 0) << out << err;
  EXPECT_NE(out.find("\"code\": \"stored\""), std::string::npos) << out;
}

}  // namespace
}  // namespace liaison::testing
