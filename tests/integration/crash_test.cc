// Durability under crashes: a stream of messages while the broker is killed
// with SIGKILL at random moments and restarted. Every message whose sender
// saw "stored" must reach the recipient application exactly once.
//
// LIAISON_CRASH_MESSAGES and LIAISON_CRASH_KILLS size it (defaults for
// `make test`: 10,000 messages, 3 kills; `make soak`: 100,000 and 10).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using wire::Code;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

std::vector<uint8_t> Message(const std::string& id) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-" + id;
  auto r = std::make_unique<wire::RecipientT>();
  r->agency = "youth-b";
  e.to.push_back(std::move(r));
  wire::CaseUpdateT update;
  update.notes = std::string(1500, 'n');  // ~2 KiB messages
  update.status = wire::CaseStatus::in_progress;
  e.payload.Set(update);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

TEST(CrashTest, EveryStoredMessageArrivesExactlyOnceAcrossKills) {
  const int total = EnvInt("LIAISON_CRASH_MESSAGES", 10000);
  const int kills = EnvInt("LIAISON_CRASH_KILLS", 3);
  const int senders = EnvInt("LIAISON_CRASH_SENDERS", 16);
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  TestAgency youth = MakeAgency("youth-b", "youth-welfare", "mombasa");
  BrokerProcess broker(dir, {exit, youth});
  ASSERT_TRUE(broker.Start().ok());
  const std::string endpoint = broker.endpoint();

  std::mutex mu;
  std::set<std::string> stored;        // sender saw "stored"
  std::multiset<std::string> received; // the application got it
  std::atomic<int> sent{0};
  std::atomic<bool> stop_receiving{false};

  std::thread receiver([&] {
    auto options = broker.AgentFor(youth, wire::Role::receiver);
    auto agent = Agent::Connect(options);
    ASSERT_TRUE(agent.ok());
    while (!stop_receiving) {
      auto m = (*agent)->Receive(200ms);
      if (!m.ok() || !m->has_value()) continue;
      {
        std::lock_guard<std::mutex> lock(mu);
        received.insert((**m)->id()->str());
      }
      (void)(*agent)->Ack((**m)->id()->string_view());
    }
  });

  std::vector<std::thread> producers;
  for (int t = 0; t < senders; ++t) {
    producers.emplace_back([&, t] {
      auto options = broker.AgentFor(exit, wire::Role::sender);
      options.receipt_timeout = 60000ms;  // rides out a restart: resends the same id
      options.resend_interval = 1000ms;
      auto agent = Agent::Connect(options);
      ASSERT_TRUE(agent.ok());
      for (int i = t; i < total; i += senders) {
        const std::string id = "m" + std::to_string(i);
        auto receipt = (*agent)->Send(Message(id));
        ASSERT_TRUE(receipt.ok()) << id << ": " << receipt.status().ToString();
        if ((*receipt)->code() == Code::unavailable) {  // the store refused: send again
          i -= senders;
          continue;
        }
        ASSERT_EQ(Code::ok, (*receipt)->code()) << id;
        ASSERT_EQ(Code::stored, (*receipt)->recipients()->Get(0)->code()) << id;
        std::lock_guard<std::mutex> lock(mu);
        stored.insert(id);
        sent++;
      }
    });
  }

  std::mt19937 rng(42);
  for (int k = 0; k < kills; ++k) {
    // Kill at a random point of the stream.
    const int at = static_cast<int>((k + 1) * total / (kills + 1) + rng() % (total / (4 * (kills + 1)) + 1));
    while (sent < at && sent < total) std::this_thread::sleep_for(5ms);
    broker.Stop(SIGKILL);
    Status st = broker.Start(endpoint);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  for (auto& p : producers) p.join();
  ASSERT_EQ(total, static_cast<int>(stored.size()));

  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      std::set<std::string> distinct(received.begin(), received.end());
      if (distinct.size() >= stored.size()) break;
    }
    std::this_thread::sleep_for(100ms);
  }
  std::this_thread::sleep_for(500ms);  // any late duplicate would show now
  stop_receiving = true;
  receiver.join();

  std::lock_guard<std::mutex> lock(mu);
  std::set<std::string> distinct(received.begin(), received.end());
  EXPECT_EQ(stored, distinct) << "stored " << stored.size() << ", received " << distinct.size();
  EXPECT_EQ(received.size(), distinct.size()) << "the application saw duplicates";
  std::printf("crash test: %d messages stored, %zu received once each, %d kills\n", total,
              distinct.size(), kills);
}

}  // namespace
}  // namespace liaison::testing
