// Erasure that shreds (issue 18, part 3; docs/audit.md "Erasure that
// shreds"): a backup taken before an erasure, opened with the store key and
// the current case-key ring, opens every other case's copies and none of the
// erased case's; restored and served by a real broker, it delivers the other
// case only; the ledger verifies and shows the erasure.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "integration/broker_process.h"
#include "liaison/agent.h"
#include "liaison/keys.h"
#include "sqlite/sqlite_store.h"
#include "store/case_keys.h"

namespace liaison::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::vector<uint8_t> Message(const std::string& id, const std::string& to, const std::string& case_ref,
                             bool erasure = false) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = case_ref;
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  if (erasure) {
    wire::ErasureRequestT r;
    r.reason = "consent withdrawn";
    e.payload.Set(r);
  } else {
    wire::CaseUpdateT u;
    u.notes = "progress";
    e.payload.Set(u);
  }
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::string Code(Agent& agent, const std::vector<uint8_t>& bytes) {
  auto r = agent.Send(bytes);
  if (!r.ok()) return r.status().ToString();
  return wire::EnumNameCode((*r)->code());
}

// What a copy of the store at `db` opens for `recipient` with the store key
// and the ring at `ring_path`: the ids that open, and how many do not.
struct Opened {
  std::set<std::string> ids;
  size_t unreadable = 0;
};
Opened OpenCopies(const std::string& db, const std::string& key_file, const std::string& ring_path,
                  const std::string& recipient) {
  Opened out;
  auto key = LoadStoreKey(key_file);
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  if (!key.ok()) return out;
  auto ring = store::CaseKeyRing::Open(ring_path, *key);
  EXPECT_TRUE(ring.ok()) << ring.status().ToString();
  if (!ring.ok()) return out;
  auto s = store::SqliteStore::Open(db, *key, 0, false, *ring);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  if (!s.ok()) return out;
  std::vector<int64_t> damaged;
  auto pending = (*s)->Pending(recipient, 0, 1000, &damaged);
  EXPECT_TRUE(pending.ok()) << pending.status().ToString();
  if (!pending.ok()) return out;
  for (const auto& m : *pending) out.ids.insert(m.message_id);
  out.unreadable = damaged.size();
  return out;
}

class ShredTest : public ::testing::Test {
 protected:
  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
};

TEST_F(ShredTest, AnErasureLeavesAnEarlierBackupReadableForEveryOtherCaseOnly) {
  BrokerProcess broker(dir_, {a_, b_});
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  const std::string key_file = dir_.file("keys/store.key");
  const std::string ring = key_file + ".ring";
  {
    auto a = Agent::Connect(broker.AgentFor(a_));
    ASSERT_TRUE(a.ok());
    // b is offline: both cases' copies wait in the store.
    ASSERT_EQ("ok", Code(**a, Message("x1", "b", "CASE-X")));
    ASSERT_EQ("ok", Code(**a, Message("x2", "b", "CASE-X")));
    ASSERT_EQ("ok", Code(**a, Message("y1", "b", "CASE-Y")));
  }
  // The ring was made at the first start, owner-only.
  struct stat st {};
  ASSERT_EQ(0, ::stat(ring.c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 0777);

  const std::string backup = dir_.file("backup-1");
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "backup", "--config", broker.config_path(), "--out", backup}, &out, &err))
      << out << err;
  // Before the erasure the backup opens every case.
  {
    TempDir scratch;
    fs::copy_file(backup + "/store.db", scratch.file("s.db"));
    const Opened before = OpenCopies(scratch.file("s.db"), key_file, ring, "b");
    EXPECT_EQ((std::set<std::string>{"x1", "x2", "y1"}), before.ids);
    EXPECT_EQ(0u, before.unreadable);
  }

  {
    auto a = Agent::Connect(broker.AgentFor(a_));
    ASSERT_TRUE(a.ok());
    ASSERT_EQ("ok", Code(**a, Message("x-erase", "b", "CASE-X", /*erasure=*/true)));
    // A later message of the same case gets a new key and stays readable.
    ASSERT_EQ("ok", Code(**a, Message("x3", "b", "CASE-X")));
  }
  ASSERT_TRUE(broker.WaitForLog("event=case_keys_rotated")) << broker.log();
  EXPECT_EQ(0, broker.Stop());

  // The live store: the erasure itself and the later x3 are delivered.
  {
    TempDir scratch;
    fs::copy_file(broker.store_path(), scratch.file("live.db"));
    if (fs::exists(broker.store_path() + "-wal")) fs::copy_file(broker.store_path() + "-wal", scratch.file("live.db-wal"));
    const Opened live = OpenCopies(scratch.file("live.db"), key_file, ring, "b");
    EXPECT_EQ((std::set<std::string>{"y1", "x-erase", "x3"}), live.ids);
    EXPECT_EQ(0u, live.unreadable);
  }
  // The backup taken before: with the store key and the current ring, the
  // other case opens and none of the erased case's copies do.
  {
    TempDir scratch;
    fs::copy_file(backup + "/store.db", scratch.file("s.db"));
    const Opened after = OpenCopies(scratch.file("s.db"), key_file, ring, "b");
    EXPECT_EQ((std::set<std::string>{"y1"}), after.ids);
    EXPECT_EQ(2u, after.unreadable);  // x1, x2
  }
  // Nor does the backup's own wrapped key open under any KEK the ring holds:
  // the ring now holds one epoch only.
  {
    const std::string text = ReadText(ring);
    size_t keks = 0;
    for (size_t at = text.find("\nkek "); at != std::string::npos; at = text.find("\nkek ", at + 1)) ++keks;
    EXPECT_EQ(1u, keks) << "the previous epoch's KEK must be gone";
  }

  // The ledger still verifies and shows the erasure.
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", broker.ledger_path(), "--public-key",
                           broker.ledger_public_key()},
                          &out, &err))
      << out << err;
  const std::string ledger = ReadText(broker.ledger_path());
  EXPECT_NE(std::string::npos, ledger.find("\"erased\"")) << "the erased copies are in the ledger";
  EXPECT_NE(std::string::npos, ledger.find("ErasureRequest"));

  // Restored into a fresh folder with the keys (store key and ring, kept
  // apart from the data) and served by a real broker: b receives the other
  // case, never the erased one's copies.
  TempDir fresh;
  BrokerProcess restored(fresh, {a_, b_});
  for (const char* name : {"keys/store.key", "keys/store.key.ring", "keys/pseudonym.key", "keys/ledger-signing.key",
                           "keys/ledger-signing.pub"}) {
    fs::copy_file(dir_.file(name), fresh.file(name), fs::copy_options::overwrite_existing);
  }
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "restore", "--config", restored.config_path(), "--from", backup}, &out,
                          &err))
      << out << err;
  ASSERT_TRUE(restored.Start().ok()) << restored.log();
  auto receiver = Agent::Connect(restored.AgentFor(b_, wire::Role::receiver));
  ASSERT_TRUE(receiver.ok());
  std::set<std::string> received;
  while (true) {
    auto m = (*receiver)->Receive(2000ms);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    if (!m->has_value()) break;
    received.insert((**m)->id()->str());
    ASSERT_TRUE((*receiver)->Ack("a", (**m)->id()->string_view()).ok());
  }
  EXPECT_EQ((std::set<std::string>{"y1"}), received);
  EXPECT_TRUE(restored.WaitForLog("event=case_keys_adopted")) << restored.log();
  EXPECT_TRUE(restored.WaitForLog("event=store_damaged_message")) << restored.log();
  restored.Stop();
}

}  // namespace
}  // namespace liaison::testing
