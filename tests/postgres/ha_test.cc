// Two real broker processes on one PostgreSQL database (a cluster the test
// starts itself): one active under the lease, the other a standby that
// answers `standby`; a SIGKILLed active one is replaced by the standby, a
// paused one (SIGSTOP past its lease) commits nothing when it resumes and
// steps down, and an active broker rides out the database going away.
// docs/operations.md, section 6c, "Two brokers: active and standby".
//
// Each agent here is given one endpoint (AgentOptions.broker_endpoint), and
// the test moves its sender and receiver to the other broker itself,
// resending unacknowledged messages under the same ids and remembering
// across the move what the application already acked (ReceiverApp), so
// that it controls when each move happens. The multi-endpoint agent
// (AgentOptions.broker_endpoints, `brokers:`) does the same by itself; its
// failover is tested in tests/integration/failover_test.cc.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "integration/broker_process.h"
#include "liaison/agent.h"
#include "testing/fixtures.h"
#include "testing/pg_cluster.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The admin endpoint of the broker's latest start (from its log).
std::string AdminOf(const BrokerProcess& broker) {
  if (!broker.WaitForLog("event=admin_listening endpoint=")) return "";
  const std::string log = broker.log();
  std::string last;
  static const std::regex kAdmin("event=admin_listening endpoint=(\\S+)");
  for (auto it = std::sregex_iterator(log.begin(), log.end(), kAdmin); it != std::sregex_iterator(); ++it) {
    last = (*it)[1];
  }
  return last;
}

std::vector<uint8_t> Update(const std::string& id, const std::string& to) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-" + id;
  auto r = std::make_unique<wire::RecipientT>();
  r->agency = to;
  e.to.push_back(std::move(r));
  wire::CaseUpdateT update;
  update.status = wire::CaseStatus::in_progress;
  e.payload.Set(update);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// One SQL value from the test's own connection.
std::string Query(const std::string& url, const std::string& password, const std::string& sql) {
  const char* keywords[] = {"dbname", "password", nullptr};
  const char* values[] = {url.c_str(), password.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, 1);
  std::string out;
  if (PQstatus(conn) != CONNECTION_OK) {
    out = std::string("connect: ") + PQerrorMessage(conn);
  } else {
    PGresult* r = PQexec(conn, sql.c_str());
    out = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0)
                                                                      : std::string("error: ") + PQerrorMessage(conn);
    PQclear(r);
  }
  PQfinish(conn);
  return out;
}

// What a broker answers one frame pair from a raw CURVE DEALER (the agent
// library moves on by itself at a `standby` answer and never returns it).
struct RawAnswer {
  std::string command;
  wire::Code code = wire::Code::ok;
  std::string message_id, detail;
};

std::optional<RawAnswer> Ask(const AgentOptions& o, const std::string& command, const std::vector<uint8_t>& body) {
  zmq::context_t context;
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::rcvtimeo, 5000);  // bounded
  socket.set(zmq::sockopt::curve_serverkey, o.broker_public_key);
  socket.set(zmq::sockopt::curve_publickey, o.keys.public_z85);
  socket.set(zmq::sockopt::curve_secretkey, o.keys.secret_z85);
  socket.connect(o.broker_endpoint);
  socket.send(zmq::buffer(command), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(body), zmq::send_flags::none);
  std::vector<zmq::message_t> frames;
  if (!zmq::recv_multipart(socket, std::back_inserter(frames)) || frames.size() != 2) return std::nullopt;
  RawAnswer answer;
  answer.command = frames[0].to_string();
  std::vector<uint8_t> bytes(frames[1].data<uint8_t>(), frames[1].data<uint8_t>() + frames[1].size());
  if (const wire::Receipt* r = wire::VerifyReceipt(bytes)) {
    answer.code = r->code();
    answer.message_id = r->message_id() ? r->message_id()->str() : "";
    answer.detail = r->detail() ? r->detail()->str() : "";
  }
  return answer;
}

// The receiving application: takes each delivered message once, whichever
// broker and connection it came through, and acks it.
class ReceiverApp {
 public:
  // Receives on `agent` until `stop`; returns an error text or "".
  std::string Run(Agent* agent, const std::atomic<bool>& stop) {
    while (!stop) {
      auto m = agent->Receive(100ms);
      if (!m.ok()) return "receive: " + m.status().ToString();
      if (!m->has_value()) continue;
      const wire::Envelope* e = (*m)->get();
      const std::string id = e->id()->str();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!got_.insert(id).second) ++redelivered_;  // acked before, through the other broker
      }
      (void)agent->Ack(e->from()->string_view(), id);  // a lost ack is redelivered, then acked again
    }
    return "";
  }
  std::set<std::string> got() const {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }
  int redelivered() const {
    std::lock_guard<std::mutex> lock(mu_);
    return redelivered_;
  }

 private:
  mutable std::mutex mu_;
  std::set<std::string> got_;  // what the application has
  int redelivered_ = 0;        // copies offered again after a failover, not handed to it
};

class HaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    cluster_ = PgCluster::Shared(&why);
    if (!cluster_ && why.find("not found") != std::string::npos) GTEST_SKIP() << "postgresql: " << why;
    ASSERT_NE(nullptr, cluster_) << why;
    exit_ = MakeAgency("exit-a", "exit-programme", "mombasa");
    youth_ = MakeAgency("youth-b", "youth-welfare", "mombasa");
  }

  // broker.yaml's store lines for a new database on `cluster`, with a
  // short lease (so that the tests' failovers are quick).
  std::string StoreSettings(PgCluster* cluster, const std::string& name, int ttl_ms, int renew_ms) {
    static std::atomic<int> next{0};
    auto url = cluster->CreateDatabase(name + "_" + std::to_string(::getpid()) + "_" + std::to_string(next++));
    EXPECT_TRUE(url.ok()) << url.status().ToString();
    url_ = url.ok() ? *url : "";
    password_ = cluster->password();
    const std::string password_file = password_dir_.file("db.password");
    WriteText(password_file, password_ + "\n");
    EXPECT_EQ(0, ::chmod(password_file.c_str(), 0600));
    return "backend: postgresql\nurl: \"" + url_ + "\"\npassword_file: " + password_file +
           "\nlease_ttl_ms: " + std::to_string(ttl_ms) + "\nlease_renew_ms: " + std::to_string(renew_ms) + "\n";
  }

  // Two brokers with the same keys on one database; `a` starts first and
  // takes the lease, `b` is its standby.
  // `vocabulary_extra` is appended to both brokers' vocabulary.yaml.
  void StartPair(int ttl_ms = 3000, int renew_ms = 500, const std::string& vocabulary_extra = "") {
    const std::string settings = StoreSettings(cluster_, "ha", ttl_ms, renew_ms);
    a_ = std::make_unique<BrokerProcess>(dir_a_, std::vector<TestAgency>{exit_, youth_}, "", false, settings);
    b_ = std::make_unique<BrokerProcess>(dir_b_, std::vector<TestAgency>{exit_, youth_}, "", false, settings);
    ASSERT_TRUE(b_->ShareKeysOf(*a_).ok());
    for (BrokerProcess* broker : {a_.get(), b_.get()}) {
      const std::string path = broker->policies_dir() + "/vocabulary.yaml";
      WriteText(path, ReadText(path) + vocabulary_extra);
    }
    ASSERT_TRUE(a_->Start().ok()) << a_->log();
    ASSERT_TRUE(a_->WaitForLog("event=ha_active", 10000)) << a_->log();
    ASSERT_TRUE(b_->Start().ok()) << b_->log();
    ASSERT_TRUE(b_->WaitForLog("event=ha_standby", 10000)) << b_->log();
  }

  // Agent options for `broker` (keys are shared: a_'s options with its endpoint).
  AgentOptions AgentAt(const BrokerProcess& broker, const TestAgency& agency, wire::Role role) const {
    AgentOptions options = a_->AgentFor(agency, role);
    options.broker_endpoint = broker.endpoint();
    return options;
  }

  // Sends `id` through `agent` until the broker answers stored (bounded);
  // standby and unavailable are answered by resending the same id.
  ::testing::AssertionResult SendUntilStored(Agent* agent, const std::string& id, int attempts = 40) {
    std::string last;
    for (int i = 0; i < attempts; ++i) {
      auto receipt = agent->Send(Update(id, youth_.id));
      if (!receipt.ok()) {
        last = receipt.status().ToString();
        continue;
      }
      const wire::Receipt* r = receipt->get();
      if (r->code() == wire::Code::standby || r->code() == wire::Code::unavailable) {
        last = wire::EnumNameCode(r->code());
        std::this_thread::sleep_for(250ms);
        continue;
      }
      if (r->code() == wire::Code::ok && r->recipients() && r->recipients()->size() == 1 &&
          r->recipients()->Get(0)->code() == wire::Code::stored && r->message_id() && r->message_id()->str() == id) {
        return ::testing::AssertionSuccess();
      }
      return ::testing::AssertionFailure() << id << ": answered " << wire::EnumNameCode(r->code());
    }
    return ::testing::AssertionFailure() << id << ": not stored after " << attempts << " attempts; last: " << last;
  }

  // Waits (bounded) until /readyz of `broker` answers `status` with `text`.
  bool WaitReadyz(const BrokerProcess& broker, int status, const std::string& text, int timeout_ms = 10000) {
    const std::string admin = AdminOf(broker);
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      auto [code, body] = HttpGet(admin, "/readyz");
      if (code == status && body.find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  ::testing::AssertionResult LedgerVerifies(const BrokerProcess& broker) {
    std::string out, err;
    const int rc = RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", broker.ledger_path(), "--public-key",
                               a_->ledger_public_key()},
                              &out, &err);
    if (rc == 0) return ::testing::AssertionSuccess() << out;
    return ::testing::AssertionFailure() << "audit verify exited " << rc << ": " << out << err;
  }

  PgCluster* cluster_ = nullptr;
  TestAgency exit_, youth_;
  TempDir dir_a_, dir_b_, password_dir_;
  std::string url_, password_;
  std::unique_ptr<BrokerProcess> a_, b_;
};

// (a) Exactly one of two brokers on one database is active: /readyz and
// /metrics say which, and the standby answers HELLO, SEND and ACK with
// `standby`, storing nothing.
TEST_F(HaTest, OneOfTwoBrokersIsActiveAndTheOtherAnswersStandby) {
  StartPair();
  EXPECT_TRUE(WaitReadyz(*a_, 200, "role=active")) << HttpGet(AdminOf(*a_), "/readyz").second;
  EXPECT_TRUE(WaitReadyz(*b_, 503, "role=standby")) << HttpGet(AdminOf(*b_), "/readyz").second;
  const std::string metrics_a = HttpGet(AdminOf(*a_), "/metrics").second;
  const std::string metrics_b = HttpGet(AdminOf(*b_), "/metrics").second;
  EXPECT_NE(std::string::npos, metrics_a.find("liaison_ha_role{role=\"active\"} 1")) << metrics_a;
  EXPECT_NE(std::string::npos, metrics_a.find("liaison_ha_role{role=\"standby\"} 0")) << metrics_a;
  EXPECT_NE(std::string::npos, metrics_a.find("liaison_ha_lease_age_seconds ")) << metrics_a;
  EXPECT_NE(std::string::npos, metrics_b.find("liaison_ha_role{role=\"standby\"} 1")) << metrics_b;
  EXPECT_NE(std::string::npos, metrics_b.find("liaison_ha_epoch 0")) << metrics_b;

  // HELLO, ACK and SEND each get a standby receipt (never WELCOME); the
  // SEND's carries its id.
  const AgentOptions at_b = AgentAt(*b_, exit_, wire::Role::sender);
  flatbuffers::FlatBufferBuilder hello;
  hello.Finish(wire::CreateHelloDirect(hello, wire::Role::receiver, "ha-test"));
  auto answer = Ask(at_b, std::string(wire::kHello), {hello.GetBufferPointer(), hello.GetBufferPointer() + hello.GetSize()});
  ASSERT_TRUE(answer.has_value()) << "no answer to HELLO";
  EXPECT_EQ(std::string(wire::kReceipt), answer->command);
  EXPECT_EQ(wire::Code::standby, answer->code);
  EXPECT_NE(std::string::npos, answer->detail.find("standby")) << answer->detail;
  flatbuffers::FlatBufferBuilder ack;
  ack.Finish(wire::CreateAckDirect(ack, "m0", exit_.id.c_str()));
  answer = Ask(at_b, std::string(wire::kAck), {ack.GetBufferPointer(), ack.GetBufferPointer() + ack.GetSize()});
  ASSERT_TRUE(answer.has_value()) << "no answer to ACK";
  EXPECT_EQ(wire::Code::standby, answer->code);
  answer = Ask(at_b, std::string(wire::kSend), Update("m1", youth_.id));
  ASSERT_TRUE(answer.has_value()) << "no answer to SEND";
  EXPECT_EQ(std::string(wire::kReceipt), answer->command);
  EXPECT_EQ(wire::Code::standby, answer->code);
  EXPECT_EQ("m1", answer->message_id);
  EXPECT_EQ("0", Query(url_, password_, "SELECT COUNT(*) FROM receipts"));

  // The active one stores.
  auto sender_a = Agent::Connect(AgentAt(*a_, exit_, wire::Role::sender));
  ASSERT_TRUE(sender_a.ok());
  EXPECT_TRUE(SendUntilStored(sender_a->get(), "m1"));
  EXPECT_EQ("1", Query(url_, password_, "SELECT COUNT(*) FROM receipts"));
}

// (b) The active broker is SIGKILLed while a sender sends: the standby
// takes over within the lease's time and a margin, the sender resends
// what was not acknowledged to it under the same ids, nothing
// acknowledged is lost, the application gets each message once, and the
// new active broker's ledger file verifies.
TEST_F(HaTest, TheStandbyTakesOverFromAKilledActiveBrokerAndNothingAcknowledgedIsLost) {
  const int ttl_ms = 3000;
  StartPair(ttl_ms, 500);
  constexpr int kTotal = 300;
  constexpr int kKillAt = 120;

  ReceiverApp app;
  std::atomic<bool> stop_receiver{false};
  std::string receiver_error;
  auto receiver = Agent::Connect(AgentAt(*a_, youth_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  std::thread receiving([&] { receiver_error = app.Run(receiver->get(), stop_receiver); });

  auto options = AgentAt(*a_, exit_, wire::Role::sender);
  options.receipt_timeout = 1500ms;
  options.resend_interval = 500ms;
  auto sender = Agent::Connect(options);
  ASSERT_TRUE(sender.ok());
  std::set<std::string> acknowledged;
  Clock::time_point killed_at{};
  double failover_seconds = -1;
  for (int i = 0; i < kTotal; ++i) {
    const std::string id = "m" + std::to_string(i);
    if (i == kKillAt) {
      EXPECT_EQ(-SIGKILL, a_->Stop(SIGKILL));
      killed_at = Clock::now();
    }
    bool stored = false;
    for (int attempt = 0; attempt < 200 && !stored; ++attempt) {  // bounded: a few minutes at most
      auto receipt = (*sender)->Send(Update(id, youth_.id));
      if (receipt.ok() && (*receipt)->code() == wire::Code::ok) {
        ASSERT_EQ(wire::Code::stored, (*receipt)->recipients()->Get(0)->code());
        stored = true;
        if (failover_seconds < 0 && i >= kKillAt) {
          failover_seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
        }
        break;
      }
      if (receipt.ok()) {
        const auto code = (*receipt)->code();
        ASSERT_TRUE(code == wire::Code::standby || code == wire::Code::unavailable) << wire::EnumNameCode(code);
      }
      if (i >= kKillAt && options.broker_endpoint != b_->endpoint()) {
        // No answer from the dead broker: move to the other endpoint (as
        // the multi-endpoint agent does) and resend the same id.
        options.broker_endpoint = b_->endpoint();
        auto moved = Agent::Connect(options);
        ASSERT_TRUE(moved.ok());
        sender = std::move(moved);
      } else {
        std::this_thread::sleep_for(100ms);
      }
    }
    ASSERT_TRUE(stored) << id << " never stored; " << b_->log();
    acknowledged.insert(id);
    if (i == kKillAt) {
      // The receiver moves too, once there is an active broker to move to.
      stop_receiver = true;
      receiving.join();
      ASSERT_EQ("", receiver_error);
      stop_receiver = false;
      auto moved = Agent::Connect(AgentAt(*b_, youth_, wire::Role::receiver));
      ASSERT_TRUE(moved.ok());
      receiver = std::move(moved);
      receiving = std::thread([&] { receiver_error = app.Run(receiver->get(), stop_receiver); });
    }
  }
  std::printf("failover (SIGKILL of the active broker -> first stored receipt from the new one): %.2f s "
              "(lease %d ms)\n",
              failover_seconds, ttl_ms);
  EXPECT_GE(failover_seconds, 0);
  EXPECT_LT(failover_seconds, ttl_ms / 1000.0 + 10) << "bounded: the lease's time and a margin";
  EXPECT_TRUE(b_->WaitForLog("event=ha_active")) << b_->log();

  // Everything acknowledged arrives (bounded wait), each once at the application.
  for (int i = 0; i < 300 && app.got().size() < acknowledged.size(); ++i) std::this_thread::sleep_for(100ms);
  std::this_thread::sleep_for(1s);  // a late duplicate would show now
  stop_receiver = true;
  receiving.join();
  EXPECT_EQ("", receiver_error);
  EXPECT_EQ(acknowledged, app.got()) << "acknowledged messages lost or extra ones";
  std::printf("%zu acknowledged, %zu received by the application, %d copies offered again after the failover "
              "(acked to the killed broker, ack not committed)\n",
              acknowledged.size(), app.got().size(), app.redelivered());
  EXPECT_EQ(std::to_string(kTotal), Query(url_, password_, "SELECT COUNT(*) FROM receipts"));

  // The standby's file was empty: it was brought up to the database's
  // records when it took the lease.
  EXPECT_NE(std::string::npos, b_->log().find("restored_records=")) << b_->log();
  EXPECT_EQ(0, b_->Stop(SIGTERM));
  EXPECT_TRUE(LedgerVerifies(*b_));
}

// (c) The active broker is paused (SIGSTOP) past its lease: the standby
// takes over; when the paused one resumes it commits nothing (a message it
// had been sent is not stored, its receipt is never `stored`), it steps
// down (exits 75, event=ha_lost_lease), and nothing is delivered twice.
TEST_F(HaTest, APausedActiveBrokerThatResumesCommitsNothingAndStepsDown) {
  StartPair(2000, 500);
  auto sender_a = Agent::Connect(AgentAt(*a_, exit_, wire::Role::sender));
  ASSERT_TRUE(sender_a.ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(SendUntilStored(sender_a->get(), "m" + std::to_string(i)));

  ASSERT_TRUE(a_->Pause()) << "the active broker's threads did not all stop";
  // Sent to the paused broker: it waits in its socket.
  const auto late = Update("late", youth_.id);
  ASSERT_TRUE((*sender_a)->SendFrames(wire::kSend, late).ok());
  ASSERT_TRUE(b_->WaitForLog("event=ha_active", 15000)) << b_->log();
  const std::string epoch_b = Query(url_, password_, "SELECT epoch FROM lease");

  a_->Signal(SIGCONT);
  const auto code = a_->WaitExit(15000);
  ASSERT_TRUE(code.has_value()) << "the resumed broker did not step down; " << a_->log();
  EXPECT_EQ(75, *code) << a_->log();
  EXPECT_NE(std::string::npos, a_->log().find("event=ha_lost_lease")) << a_->log();
  // Whatever it answered for "late" before it left, it was not `stored`.
  std::string answer = "no answer before it left";
  for (int i = 0; i < 5; ++i) {
    auto receipt = (*sender_a)->TakeReceipt(100ms);
    if (!receipt.ok() || !receipt->has_value()) continue;
    if ((**receipt)->message_id() && (**receipt)->message_id()->str() == "late") {
      answer = wire::EnumNameCode((**receipt)->code());
      EXPECT_NE(wire::Code::ok, (**receipt)->code()) << "the paused broker must not store after losing its lease";
    }
  }
  std::printf("the resumed broker's answer to the message sent while it was paused: %s; its commit failures: %s\n",
              answer.c_str(),
              a_->log().find("no longer held") != std::string::npos ? "fenced (lease no longer held)" : "none");
  EXPECT_EQ("0", Query(url_, password_, "SELECT COUNT(*) FROM receipts WHERE message_id = 'late'"))
      << "the old epoch committed a write";
  EXPECT_EQ(epoch_b, Query(url_, password_, "SELECT epoch FROM lease")) << "the lease stayed with the new holder";

  // The new active broker takes "late" and serves everything once.
  auto sender_b = Agent::Connect(AgentAt(*b_, exit_, wire::Role::sender));
  ASSERT_TRUE(sender_b.ok());
  EXPECT_TRUE(SendUntilStored(sender_b->get(), "late"));
  ReceiverApp app;
  std::atomic<bool> stop{false};
  std::string error;
  auto receiver = Agent::Connect(AgentAt(*b_, youth_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  std::thread receiving([&] { error = app.Run(receiver->get(), stop); });
  for (int i = 0; i < 100 && app.got().size() < 6; ++i) std::this_thread::sleep_for(100ms);
  std::this_thread::sleep_for(1s);
  stop = true;
  receiving.join();
  EXPECT_EQ("", error);
  EXPECT_EQ((std::set<std::string>{"m0", "m1", "m2", "m3", "m4", "late"}), app.got());
  EXPECT_EQ(0, app.redelivered());
  EXPECT_EQ(0, b_->Stop(SIGTERM));
  EXPECT_TRUE(LedgerVerifies(*b_));
}

// (c, the fence itself) The lease is taken from the active broker between
// two of its renewals (as a broker that was paused finds on waking): its
// next batch fails whole at the fence and is answered `unavailable`, never
// `stored`; at its next renewal it steps down (exit 75). A long renewal
// interval makes the order certain.
TEST_F(HaTest, ABrokerWhoseLeaseWasTakenCommitsNothingAndStepsDownAtItsNextRenewal) {
  const std::string settings = StoreSettings(cluster_, "taken", 30000, 10000);
  a_ = std::make_unique<BrokerProcess>(dir_a_, std::vector<TestAgency>{exit_, youth_}, "", false, settings);
  ASSERT_TRUE(a_->Start().ok()) << a_->log();
  ASSERT_TRUE(a_->WaitForLog("event=ha_active", 10000)) << a_->log();
  auto sender = Agent::Connect(AgentAt(*a_, exit_, wire::Role::sender));
  ASSERT_TRUE(sender.ok());
  ASSERT_TRUE(SendUntilStored(sender->get(), "m0"));

  // Another holder takes the lease, with the next epoch (as a standby does).
  EXPECT_EQ("other", Query(url_, password_,
                           "UPDATE lease SET holder = 'other', epoch = epoch + 1, "
                           "expires_at = clock_timestamp() + interval '1 hour' RETURNING holder"));
  auto receipt = (*sender)->Send(Update("m1", youth_.id));
  ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
  EXPECT_EQ(wire::Code::unavailable, (*receipt)->code()) << "a broker without the lease must not store";
  EXPECT_EQ("0", Query(url_, password_, "SELECT COUNT(*) FROM receipts WHERE message_id = 'm1'"));
  EXPECT_TRUE(a_->WaitForLog("no longer held by this broker")) << a_->log();

  const auto code = a_->WaitExit(20000);  // bounded: one renewal interval and a margin
  ASSERT_TRUE(code.has_value()) << a_->log();
  EXPECT_EQ(75, *code);
  EXPECT_NE(std::string::npos, a_->log().find("event=ha_lost_lease")) << a_->log();
  EXPECT_EQ("0", Query(url_, password_, "SELECT COUNT(*) FROM receipts WHERE message_id = 'm1'"));
}

// (d) The database goes away under the active broker: senders get
// `unavailable`, /readyz is not ready; when it returns, service resumes by
// itself (within the lease, which the broker renews again) and nothing
// acknowledged is lost. A cluster of its own, so that stopping it
// disturbs no other test.
TEST_F(HaTest, TheActiveBrokerRidesOutTheDatabaseGoingAwayAndComingBack) {
  auto own = PgCluster::Start();
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  const std::string settings = StoreSettings(own->get(), "outage", 30000, 1000);
  a_ = std::make_unique<BrokerProcess>(dir_a_, std::vector<TestAgency>{exit_, youth_}, "", false, settings);
  ASSERT_TRUE(a_->Start().ok()) << a_->log();
  ASSERT_TRUE(a_->WaitForLog("event=ha_active", 10000)) << a_->log();
  EXPECT_TRUE(WaitReadyz(*a_, 200, "role=active"));
  auto options = AgentAt(*a_, exit_, wire::Role::sender);
  options.receipt_timeout = 3000ms;
  auto sender = Agent::Connect(options);
  ASSERT_TRUE(sender.ok());
  ASSERT_TRUE(SendUntilStored(sender->get(), "before"));

  ASSERT_TRUE((*own)->StopServer().ok());
  bool unavailable = false;
  for (int i = 0; i < 20 && !unavailable; ++i) {
    auto receipt = (*sender)->Send(Update("during", youth_.id));
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
    ASSERT_NE(wire::Code::ok, (*receipt)->code()) << "stored while the database was down";
    unavailable = (*receipt)->code() == wire::Code::unavailable;
  }
  EXPECT_TRUE(unavailable);
  EXPECT_TRUE(WaitReadyz(*a_, 503, "role=active")) << HttpGet(AdminOf(*a_), "/readyz").second;

  ASSERT_TRUE((*own)->RestartServer().ok()) << (*own)->Log();
  EXPECT_TRUE(SendUntilStored(sender->get(), "during", 80)) << a_->log();
  EXPECT_TRUE(WaitReadyz(*a_, 200, "role=active", 15000)) << HttpGet(AdminOf(*a_), "/readyz").second;
  EXPECT_TRUE(a_->running()) << "the broker kept its lease through the outage";

  ReceiverApp app;
  std::atomic<bool> stop{false};
  std::string error;
  auto receiver = Agent::Connect(AgentAt(*a_, youth_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  std::thread receiving([&] { error = app.Run(receiver->get(), stop); });
  for (int i = 0; i < 100 && app.got().size() < 2; ++i) std::this_thread::sleep_for(100ms);
  stop = true;
  receiving.join();
  EXPECT_EQ("", error);
  EXPECT_EQ((std::set<std::string>{"before", "during"}), app.got());
  EXPECT_EQ(0, a_->Stop(SIGTERM));
  EXPECT_TRUE(LedgerVerifies(*a_));
}

// (e) A clean stop (SIGTERM) of the active broker hands the lease on: it
// commits its last batch, ends its lease, and exits; the standby takes the
// lease at its next try. The lease is 30 s long and the wait for the
// standby 10 s, so a standby that had to wait the lease out would fail.
TEST_F(HaTest, ACleanlyStoppedActiveBrokerReleasesItsLeaseAndTheStandbyTakesOverAtOnce) {
  StartPair(/*ttl_ms=*/30000, /*renew_ms=*/500);
  auto sender = Agent::Connect(AgentAt(*a_, exit_, wire::Role::sender));
  ASSERT_TRUE(sender.ok());
  ASSERT_TRUE(SendUntilStored(sender->get(), "before-stop"));
  const std::string epoch_a = Query(url_, password_, "SELECT epoch FROM lease");

  ASSERT_EQ(0, a_->Stop(SIGTERM)) << a_->log();
  // In the stopped broker's log: the core's last batch committed
  // (event=stopping follows Pipeline::Shutdown), then the lease released,
  // then the exit.
  const std::string log_a = a_->log();
  const size_t stopping = log_a.find("event=stopping");
  const size_t released = log_a.find("event=ha_lease_released holder=");
  ASSERT_NE(std::string::npos, stopping) << log_a;
  ASSERT_NE(std::string::npos, released) << log_a;
  EXPECT_LT(stopping, released) << log_a;
  EXPECT_NE(std::string::npos, log_a.find("epoch=" + epoch_a, released)) << log_a;
  EXPECT_NE(std::string::npos, log_a.find("event=stop\n", released)) << log_a;

  ASSERT_TRUE(b_->WaitForLog("event=ha_active", 10000)) << "the standby waited for the lease to run out:\n"
                                                         << b_->log();
  EXPECT_EQ(std::to_string(std::stoll(epoch_a) + 1), Query(url_, password_, "SELECT epoch FROM lease"));
  EXPECT_NE(std::string::npos, Query(url_, password_, "SELECT holder FROM lease").find(dir_b_.path().string()));

  // The new active broker serves, and what the old one stored is there.
  auto sender_b = Agent::Connect(AgentAt(*b_, exit_, wire::Role::sender));
  ASSERT_TRUE(sender_b.ok());
  EXPECT_TRUE(SendUntilStored(sender_b->get(), "after-stop"));
  EXPECT_EQ("2", Query(url_, password_, "SELECT COUNT(*) FROM receipts"));
}

// (f) A response deadline survives a failover (docs/protocol.md, "Response
// deadlines"): a red referral is stored by the active broker, which is then
// SIGKILLed before the deadline; the clock lives in the database, and the
// broker that took over fires it, once.
TEST_F(HaTest, AResponseDeadlineFiresOnceFromTheBrokerThatTookOver) {
  constexpr int kRedSeconds = 5;
  StartPair(3000, 500, "response_deadlines:\n  red: " + std::to_string(kRedSeconds) + "s\n");
  {
    auto sender = Agent::Connect(AgentAt(*a_, exit_, wire::Role::sender));
    ASSERT_TRUE(sender.ok());
    wire::EnvelopeT e;
    e.id = "ref-ha";
    e.case_ref = "CASE-HA-1";
    e.urgency = wire::Urgency::red;
    e.to.push_back(std::make_unique<wire::RecipientT>());
    e.to.back()->agency = youth_.id;
    wire::CaseReferralT referral;
    referral.reason = "clock-across-failover";
    e.payload.Set(std::move(referral));
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
    auto receipt = (*sender)->Send({fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()});
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
    ASSERT_EQ(wire::Code::ok, (*receipt)->code());
    ASSERT_EQ(wire::Code::stored, (*receipt)->recipients()->Get(0)->code());
  }
  ASSERT_EQ("1", Query(url_, password_, "SELECT COUNT(*) FROM clocks WHERE fired_ms IS NULL"));
  EXPECT_EQ(-SIGKILL, a_->Stop(SIGKILL));
  ASSERT_TRUE(b_->WaitForLog("event=ha_active", 15000)) << b_->log();

  // The sender's overdue notice comes from b, once; collected for a few
  // seconds after the first, so that a second firing would show.
  auto receiver = Agent::Connect(AgentAt(*b_, exit_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  int overdue = 0;
  auto until = Clock::now() + std::chrono::seconds(kRedSeconds + 20);
  while (Clock::now() < until) {
    (void)(*receiver)->Receive(100ms);
    while (auto n = (*receiver)->TakeNotice()) {
      if ((*n)->message_id() && (*n)->message_id()->str() == "ref-ha" && (*n)->recipients() &&
          (*n)->recipients()->size() == 1 && (*n)->recipients()->Get(0)->code() == wire::Code::overdue) {
        if (overdue++ == 0) until = Clock::now() + 3s;
      }
    }
  }
  EXPECT_EQ(1, overdue) << b_->log();
  EXPECT_NE(std::string::npos, b_->log().find("event=overdue agency=exit-a recipient=youth-b id=ref-ha urgency=red"))
      << b_->log();
  EXPECT_EQ("1", Query(url_, password_, "SELECT COUNT(*) FROM clocks WHERE fired_ms IS NOT NULL"));
  EXPECT_EQ(0, b_->Stop(SIGTERM));
  EXPECT_TRUE(LedgerVerifies(*b_));
}

}  // namespace
}  // namespace liaison::testing
