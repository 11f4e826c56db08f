// Attack on "any failed write means unavailable, never stored" and "a message
// acknowledged as stored is never lost" (issue 15, point 2), with a real fault
// on the real broker: a file-size limit (as a full file system would) makes
// the store's writes fail part-way through a run of messages (on a
// PostgreSQL store, LIAISON_TEST_STORE, the ledger file's writes: the batch
// fails as a whole all the same).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;

std::vector<uint8_t> Update(const std::string& id, const std::string& to) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-9";
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  wire::CaseUpdateT u;
  u.notes = std::string(3000, 'n');  // a few WAL pages per message
  e.payload.Set(u);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

TEST(StoreFaultAttack, WritesFailingMidRunAnswerUnavailableAndLoseNothingAnsweredStored) {
  TempDir dir;
  const TestAgency sender = MakeAgency("a", "exit-programme", "mombasa");
  const TestAgency recipient = MakeAgency("b", "youth-welfare", "mombasa");
  BrokerProcess broker(dir, {sender, recipient});
  ASSERT_TRUE(broker.Start().ok());
  const std::string endpoint = broker.endpoint();
  {
    auto a = Agent::Connect(broker.AgentFor(sender));
    ASSERT_TRUE(a.ok());
    auto receipt = (*a)->Send(Update("warm-up", "b"));
    ASSERT_TRUE(receipt.ok());
    ASSERT_EQ(wire::Code::stored, (*receipt)->recipients()->Get(0)->code());
  }
  ASSERT_EQ(0, broker.Stop(SIGTERM));  // checkpoints: the WAL starts empty again

  // Room for a few commits in the store's WAL, far less than 200 messages.
  uintmax_t largest = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.is_regular_file()) largest = std::max(largest, entry.file_size());
  }
  ASSERT_TRUE(broker.StartWithFileSizeLimit(largest + 96 * 1024, endpoint).ok()) << broker.log();

  std::set<std::string> stored, unavailable;
  {
    auto a = Agent::Connect(broker.AgentFor(sender));
    ASSERT_TRUE(a.ok());
    for (int i = 0; i < 200 && unavailable.size() < 5; ++i) {
      const std::string id = "m-" + std::to_string(i);
      auto receipt = (*a)->Send(Update(id, "b"));
      ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
      if ((*receipt)->code() == wire::Code::unavailable) {
        unavailable.insert(id);
        ASSERT_TRUE((*receipt)->detail());
        EXPECT_NE(std::string::npos, (*receipt)->detail()->str().find("resend it later with the same id"));
        continue;
      }
      ASSERT_EQ(wire::Code::ok, (*receipt)->code());
      ASSERT_EQ(wire::Code::stored, (*receipt)->recipients()->Get(0)->code());
      // Once a write has failed the store stays failed here (the WAL cannot
      // grow): a later "stored" would mean a failure was swallowed.
      EXPECT_TRUE(unavailable.empty()) << id << " stored after a failed write";
      stored.insert(id);
    }
  }
  ASSERT_FALSE(stored.empty()) << "the limit left no room at all; log:\n" << broker.log();
  ASSERT_FALSE(unavailable.empty()) << "no write failed; log:\n" << broker.log();
  EXPECT_TRUE(broker.running());
  EXPECT_NE(std::string::npos, broker.log().find("event=commit_failed"));
  ASSERT_EQ(0, broker.Stop(SIGTERM));

  // Room again: what was answered "stored" is all there, and nothing else.
  ASSERT_TRUE(broker.Start(endpoint).ok()) << broker.log();
  auto b = Agent::Connect(broker.AgentFor(recipient, wire::Role::receiver));
  ASSERT_TRUE(b.ok());
  std::set<std::string> delivered;
  while (true) {
    auto m = (*b)->Receive(1000ms);
    ASSERT_TRUE(m.ok());
    if (!m->has_value()) break;
    delivered.insert((**m)->id()->str());
    // Acked, so that more than one delivery window (64) of stored messages
    // comes: on PostgreSQL the limit hits the ledger file, which grows
    // slower than SQLite's WAL, and more messages are stored before it.
    ASSERT_TRUE((*b)->Ack((**m)->id()->string_view()).ok());
  }
  delivered.erase("warm-up");
  EXPECT_EQ(stored, delivered);
  for (const std::string& id : unavailable) EXPECT_EQ(0u, delivered.count(id)) << id;
}

}  // namespace
}  // namespace liaison::testing
