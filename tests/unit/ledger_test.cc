// The ledger detects every kind of tampering and says where.
#include "audit/ledger.h"

#include <gtest/gtest.h>

#include <filesystem>

#include <fstream>
#include <sstream>
#include <thread>
#include <chrono>

#include "testing/fixtures.h"

namespace liaison::audit {
namespace {

using testing::TempDir;

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines, bool final_newline = true) {
  std::ofstream out(path, std::ios::trunc);
  for (size_t i = 0; i < lines.size(); ++i) out << lines[i] << (i + 1 < lines.size() || final_newline ? "\n" : "");
}

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteSigningKey(dir_.path().string(), "sign").ok());
    key_ = *LoadSigningKey(dir_.file("sign.key"));
    pub_ = *LoadVerifyKey(dir_.file("sign.pub"));
    path_ = dir_.file("ledger.log");
    auto ledger = Ledger::Open(path_, key_, case_key_, /*checkpoint_every=*/4);
    ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
    for (int i = 0; i < 10; ++i) {
      Entry e;
      e.decision = i % 3 == 0 ? ledger::Decision::denied : ledger::Decision::released;
      e.message_id = "m" + std::to_string(i);
      e.case_ref = "CASE-SECRET-" + std::to_string(i % 2);
      e.sender = "exit-a";
      e.recipient = "youth-b";
      e.type = "CaseReferral";
      e.rules = {"r1", "a1"};
      e.released = {"subject.given_name"};
      e.dropped = {"counselling_notes"};
      (*ledger)->Add(e);
      if (i % 2 == 1) {
        ASSERT_TRUE((*ledger)->Flush().ok());
      }
    }
    ASSERT_TRUE((*ledger)->Flush(/*checkpoint=*/true).ok());
    lines_ = Lines(path_);
  }

  VerifyReport Verify() { return VerifyLedger(path_, pub_.get()); }
  std::string Problems(const VerifyReport& r) {
    std::string all;
    for (const auto& p : r.problems) all += p + "\n";
    return all;
  }

  TempDir dir_;
  std::shared_ptr<EVP_PKEY> key_, pub_;
  std::array<uint8_t, 32> case_key_ = DeriveCaseKey("broker secret");
  std::string path_;
  std::vector<std::string> lines_;
};

TEST_F(LedgerTest, AnIntactLedgerVerifies) {
  VerifyReport r = Verify();
  EXPECT_TRUE(r.ok) << Problems(r);
  EXPECT_EQ(lines_.size(), r.records);
  EXPECT_GE(r.checkpoints, 3u);
  EXPECT_EQ(lines_.size(), r.last_checkpoint_seq);
  // Names only: the case reference appears only as a pseudonym.
  const std::string text = testing::ReadText(path_);
  EXPECT_EQ(std::string::npos, text.find("CASE-SECRET"));
  EXPECT_NE(std::string::npos, text.find(CasePseudonym(case_key_, "exit-a", "CASE-SECRET-0")));
}

TEST_F(LedgerTest, AChangedByteAnywhereIsFoundOnItsLine) {
  // In a value, in a field name, in the hash, in the chain link.
  for (const std::string& target : {std::string("youth-b"), std::string("\"recipient\""),
                                    std::string("\t"), std::string("\"prev\": \"")}) {
    auto lines = lines_;
    size_t pos = lines[1].find(target);
    ASSERT_NE(std::string::npos, pos) << target;
    pos += target == "\t" ? 1 : target.size() - 2;
    lines[1][pos] = lines[1][pos] == 'a' ? 'b' : 'a';
    WriteLines(path_, lines);
    VerifyReport r = Verify();
    EXPECT_FALSE(r.ok) << target;
    EXPECT_NE(std::string::npos, Problems(r).find("line 2:")) << target << "\n" << Problems(r);
  }
}

TEST_F(LedgerTest, ARemovedRecordIsFound) {
  auto lines = lines_;
  lines.erase(lines.begin() + 3);
  WriteLines(path_, lines);
  VerifyReport r = Verify();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string::npos, Problems(r).find("line 4: expected record 4, found 5")) << Problems(r);
}

TEST_F(LedgerTest, AnInsertedRecordIsFound) {
  auto lines = lines_;
  lines.insert(lines.begin() + 2, lines[6]);
  WriteLines(path_, lines);
  VerifyReport r = Verify();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string::npos, Problems(r).find("line 3:")) << Problems(r);
}

TEST_F(LedgerTest, ReorderedRecordsAreFound) {
  auto lines = lines_;
  std::swap(lines[1], lines[2]);
  WriteLines(path_, lines);
  VerifyReport r = Verify();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string::npos, Problems(r).find("line 2: expected record 2, found 3")) << Problems(r);
}

TEST_F(LedgerTest, ATruncatedTailIsFound) {
  auto lines = lines_;
  lines.back() = lines.back().substr(0, lines.back().size() / 2);
  WriteLines(path_, lines, /*final_newline=*/false);
  VerifyReport r = Verify();
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string::npos, Problems(r).find("truncated")) << Problems(r);
}

TEST_F(LedgerTest, ACutAfterTheLastCheckpointIsReportedAsUnsigned) {
  auto ledger = Ledger::Open(path_, key_, case_key_, 100);
  Entry e;
  e.message_id = "late";
  (*ledger)->Add(e);
  ASSERT_TRUE((*ledger)->Flush().ok());
  VerifyReport r = Verify();
  EXPECT_TRUE(r.ok);
  EXPECT_NE(std::string::npos, r.Summary().find("not yet signed")) << r.Summary();
}

TEST_F(LedgerTest, TheWrongPublicKeyFailsTheSignatures) {
  ASSERT_TRUE(WriteSigningKey(dir_.path().string(), "other").ok());
  auto other = *LoadVerifyKey(dir_.file("other.pub"));
  VerifyReport r = VerifyLedger(path_, other.get());
  EXPECT_FALSE(r.ok);
  EXPECT_NE(std::string::npos, Problems(r).find("signature does not verify")) << Problems(r);
}

TEST_F(LedgerTest, ReopeningContinuesTheChainAndRepairsATornWrite) {
  {
    std::ofstream out(path_, std::ios::app);
    out << "{\"seq\":999,\"prev\":\"torn";  // a crash in the middle of a write
  }
  auto ledger = Ledger::Open(path_, key_, case_key_, 100);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  EXPECT_EQ(lines_.size(), (*ledger)->last_seq());
  Entry e;
  e.message_id = "after-restart";
  (*ledger)->Add(e);
  ASSERT_TRUE((*ledger)->Flush(true).ok());
  VerifyReport r = Verify();
  EXPECT_TRUE(r.ok) << Problems(r);
  EXPECT_EQ(lines_.size() + 2, r.records);
}

TEST_F(LedgerTest, ADamagedLastRecordStopsTheBroker) {
  auto lines = lines_;
  lines.back()[10] = lines.back()[10] == 'x' ? 'y' : 'x';
  WriteLines(path_, lines);
  auto ledger = Ledger::Open(path_, key_, case_key_, 100);
  ASSERT_FALSE(ledger.ok());
  EXPECT_NE(std::string::npos, ledger.status().message().find("liaison audit verify"));
}

TEST(LedgerWriteTest, AFailedWriteLeavesNoTraceAndIsReported) {
  TempDir dir;
  ASSERT_TRUE(WriteSigningKey(dir.path().string(), "sign").ok());
  // /dev/full refuses every write with ENOSPC: a real full disk.
  auto ledger = Ledger::Open("/dev/full", *LoadSigningKey(dir.file("sign.key")),
                             DeriveCaseKey("s"), 100);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  Entry e;
  e.message_id = "m";
  (*ledger)->Add(e);
  Status st = (*ledger)->Flush();
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string::npos, st.message().find("No space left")) << st.message();
  EXPECT_EQ(0u, (*ledger)->last_seq());
  EXPECT_FALSE((*ledger)->has_batch());
}

// A write that fails and cannot even be cut back (ftruncate refuses: here a
// device, in the field an I/O error) must not be followed by records that
// would land after the failed batch's: the ledger refuses until a restart.
TEST(LedgerWriteTest, AFileThatCannotBeCutBackTakesNoMoreRecords) {
  TempDir dir;
  ASSERT_TRUE(WriteSigningKey(dir.path().string(), "sign").ok());
  // /dev/full: every write fails (ENOSPC), and ftruncate on it fails too.
  auto ledger = Ledger::Open("/dev/full", *LoadSigningKey(dir.file("sign.key")), DeriveCaseKey("s"), 100);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  Entry e;
  e.message_id = "m";
  (*ledger)->Add(e);
  Status first = (*ledger)->Flush();
  ASSERT_FALSE(first.ok());
  EXPECT_NE(std::string::npos, first.message().find("No space left")) << first.message();
  (*ledger)->Add(e);
  Status second = (*ledger)->Flush();
  ASSERT_FALSE(second.ok());
  EXPECT_NE(std::string::npos, second.message().find("could not be cut back")) << second.message();
  EXPECT_EQ(0u, (*ledger)->last_seq());
  EXPECT_EQ(3u, (*ledger)->failures()) << "the failed write, the failed cut, the refusal";
}

// The ledger and the store commit a batch together (Write, the store's
// commit, then Keep or Undo); at Open the file is matched to what the store
// committed, whatever stopped the broker in between.
class LedgerCommitTest : public LedgerTest {
 protected:
  // Writes one batch of `n` records; returns its lines (not yet kept).
  std::vector<LedgerLine> WriteBatch(Ledger& ledger, int n, const std::string& prefix) {
    for (int i = 0; i < n; ++i) {
      Entry e;
      e.message_id = prefix + std::to_string(i);
      e.sender = "exit-a";
      e.recipient = "youth-b";
      ledger.Add(e);
    }
    auto lines = ledger.Write();
    EXPECT_TRUE(lines.ok()) << lines.status().ToString();
    return lines.ok() ? *lines : std::vector<LedgerLine>{};
  }
};

TEST_F(LedgerCommitTest, AnUndoneBatchLeavesNoTraceAndTheChainGoesOn) {
  auto ledger = Ledger::Open(path_, key_, case_key_, 100);
  ASSERT_TRUE(ledger.ok());
  auto kept = WriteBatch(**ledger, 2, "kept");
  (*ledger)->Keep();
  auto undone = WriteBatch(**ledger, 3, "undone");
  ASSERT_EQ(3u, undone.size());
  (*ledger)->Undo();  // the store commit failed
  auto after = WriteBatch(**ledger, 1, "after");
  (*ledger)->Keep();
  ASSERT_EQ(1u, after.size());
  EXPECT_EQ(kept.back().first + 1, after.front().first) << "the undone records' numbers are reused";
  VerifyReport r = Verify();
  EXPECT_TRUE(r.ok) << Problems(r);
  EXPECT_EQ(lines_.size() + 3, r.records);
  const auto lines = Lines(path_);
  for (const auto& line : lines) EXPECT_EQ(std::string::npos, line.find("undone")) << line;
}

// The reactor syncs the ledger on the ledger's own thread: it learns later
// how far the file is durable, and never past a batch still undecided.
TEST_F(LedgerCommitTest, ABackgroundSyncReportsOnlyKeptRecordsAsDurable) {
  auto ledger = Ledger::Open(path_, key_, case_key_, 100);
  ASSERT_TRUE(ledger.ok());
  const uint64_t before = (*ledger)->last_seq();
  auto kept = WriteBatch(**ledger, 3, "kept");
  (*ledger)->Keep();
  auto pending = WriteBatch(**ledger, 2, "pending");  // its commit is not decided
  ASSERT_EQ(2u, pending.size());
  auto first = (*ledger)->SyncInBackground();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(before, *first) << "returns at once what was durable before";
  uint64_t durable = *first;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (durable < kept.back().first && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto next = (*ledger)->SyncInBackground();
    ASSERT_TRUE(next.ok()) << next.status().ToString();
    durable = *next;
  }
  EXPECT_EQ(kept.back().first, durable) << "the kept records, and not the undecided batch";
  (*ledger)->Undo();
  auto synced = (*ledger)->Sync();
  ASSERT_TRUE(synced.ok());
  EXPECT_EQ(kept.back().first, *synced);
  EXPECT_EQ(0u, (*ledger)->failures());
}

TEST_F(LedgerCommitTest, RecordsOfABatchThatNeverCommittedAreCutAtOpen) {
  const uint64_t committed = lines_.size();
  {
    auto ledger = Ledger::Open(path_, key_, case_key_, 100);
    ASSERT_TRUE(ledger.ok());
    WriteBatch(**ledger, 4, "never-committed");
    // The broker dies here: the file has the lines, the store does not.
  }
  ASSERT_EQ(committed + 4, Lines(path_).size());
  auto ledger = Ledger::Open(path_, key_, case_key_, 100, committed, {});
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  EXPECT_EQ(4u, (*ledger)->uncommitted_cut());
  EXPECT_EQ(committed, (*ledger)->last_seq());
  EXPECT_EQ(lines_, Lines(path_));
  // Set aside, not destroyed.
  const auto aside = Lines(path_ + ".uncommitted");
  ASSERT_EQ(4u, aside.size());
  EXPECT_NE(std::string::npos, aside[0].find("never-committed0")) << aside[0];
  WriteBatch(**ledger, 1, "resent");
  (*ledger)->Keep();
  VerifyReport r = Verify();
  EXPECT_TRUE(r.ok) << Problems(r);
  EXPECT_EQ(committed + 1, r.records);
}

// Two brokers sharing a PostgreSQL store, each with its own file: the
// store holds every record and is the chain. Broker A dies with a batch
// written to its file but never committed; broker B takes over and commits
// records with the same numbers. When A opens its file against the store
// again, its divergent end is cut (set aside) and B's records follow.
TEST_F(LedgerCommitTest, WithAnAuthoritativeStoreADivergentEndIsCutAndTheStoresRecordsFollow) {
  const std::string other = path_ + ".b";
  std::filesystem::copy_file(path_, other);
  std::vector<LedgerLine> store_lines;
  for (size_t i = 0; i < lines_.size(); ++i) store_lines.emplace_back(i + 1, lines_[i]);
  {
    auto a = Ledger::Open(path_, key_, case_key_, 100, lines_.size(), store_lines, true);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    WriteBatch(**a, 3, "a-never-committed");  // A dies before its commit
  }
  {
    auto b = Ledger::Open(other, key_, case_key_, 100, lines_.size(), store_lines, true);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    auto committed = WriteBatch(**b, 4, "b-committed");
    (*b)->Keep();
    store_lines.insert(store_lines.end(), committed.begin(), committed.end());
  }
  auto a = Ledger::Open(path_, key_, case_key_, 100, store_lines.back().first, store_lines, true);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(3u, (*a)->uncommitted_cut());
  EXPECT_EQ(4u, (*a)->restored());
  EXPECT_EQ(store_lines.back().first, (*a)->last_seq());
  EXPECT_EQ(Lines(other), Lines(path_)) << "A's file is now the store's chain, as B's is";
  EXPECT_EQ(3u, Lines(path_ + ".uncommitted").size());
  WriteBatch(**a, 1, "a-again");
  (*a)->Keep();
  VerifyReport r = Verify();
  EXPECT_TRUE(r.ok) << Problems(r);
}

// Without an authoritative store (SQLite: one broker, one file), records
// up to the committed one are the file's own and are not compared.
TEST_F(LedgerCommitTest, WithoutAnAuthoritativeStoreRecordsUpToTheCommittedOneAreKept) {
  std::vector<LedgerLine> store_lines;
  for (size_t i = 0; i < lines_.size(); ++i) store_lines.emplace_back(i + 1, "not the file's line");
  auto ledger = Ledger::Open(path_, key_, case_key_, 100, lines_.size(), store_lines);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  EXPECT_EQ(0u, (*ledger)->uncommitted_cut());
  EXPECT_EQ(lines_, Lines(path_));
}

TEST_F(LedgerCommitTest, RecordsTheStoreCommittedButTheFileLostAreRestoredAtOpen) {
  std::vector<LedgerLine> committed_lines;
  {
    auto ledger = Ledger::Open(path_, key_, case_key_, 100);
    ASSERT_TRUE(ledger.ok());
    committed_lines = WriteBatch(**ledger, 5, "committed");
    (*ledger)->Keep();
  }
  // The machine stopped before the file reached the disk: it lost the lines
  // that the store committed.
  WriteLines(path_, lines_);
  const uint64_t committed = committed_lines.back().first;
  auto ledger = Ledger::Open(path_, key_, case_key_, 100, committed, committed_lines);
  ASSERT_TRUE(ledger.ok()) << ledger.status().ToString();
  EXPECT_EQ(5u, (*ledger)->restored());
  EXPECT_EQ(committed, (*ledger)->last_seq());
  VerifyReport r = Verify();
  EXPECT_TRUE(r.ok) << Problems(r);
  EXPECT_EQ(committed, r.records);
}

TEST_F(LedgerCommitTest, CommittedRecordsThatNeitherTheFileNorTheStoreHoldStopTheStart) {
  const uint64_t committed = lines_.size() + 3;
  auto ledger = Ledger::Open(path_, key_, case_key_, 100, committed, {});
  ASSERT_FALSE(ledger.ok());
  EXPECT_NE(std::string::npos, ledger.status().message().find("committed records up to")) << ledger.status().message();
}

TEST_F(LedgerCommitTest, StoreLinesThatDoNotChainAreNotAppended) {
  std::vector<LedgerLine> committed_lines;
  {
    auto ledger = Ledger::Open(path_, key_, case_key_, 100);
    committed_lines = WriteBatch(**ledger, 2, "committed");
    (*ledger)->Keep();
  }
  WriteLines(path_, lines_);
  committed_lines[0].second[12] ^= 1;  // changed in the store
  auto ledger = Ledger::Open(path_, key_, case_key_, 100, committed_lines.back().first, committed_lines);
  EXPECT_FALSE(ledger.ok());
  EXPECT_EQ(lines_, Lines(path_)) << "nothing unverifiable is appended";
}

// The hand-built record line is the printer's, byte for byte: a ledger
// written before it and one written after verify alike, and a record's hash
// does not depend on which of the two wrote it.
TEST(RecordJsonTest, IsWhatTheFlatBuffersPrinterWrites) {
  wire::JsonCodec codec(wire::JsonCodec::Root::kLedgerRecord);
  auto printed = [&](const ledger::LedgerRecordT& r) {
    flatbuffers::FlatBufferBuilder fbb(512);
    fbb.Finish(ledger::LedgerRecord::Pack(fbb, &r));
    auto json = codec.ToJson({fbb.GetBufferPointer(), fbb.GetSize()}, /*pretty=*/false);
    EXPECT_TRUE(json.ok()) << json.status().ToString();
    return json.ok() ? *json : std::string();
  };
  std::vector<ledger::LedgerRecordT> records;
  records.emplace_back();  // all defaults: seq 0, decision released, nothing else
  {
    ledger::LedgerRecordT r;
    r.seq = 18446744073709551615ull;
    r.prev = std::string(64, 'a');
    r.time = "2026-11-25T01:19:59.372Z";
    r.decision = ledger::Decision::released;
    r.message_id = "01M884KGW8W14ZCA2CA0W0YHZ9";
    r.case_ = "4b9504596fe93a0e311bb29b";
    r.sender = "exit-mombasa";
    r.recipient = "youth-welfare-mombasa";
    r.type = "CaseReferral";
    r.purpose = "referral-for-services";
    r.legal_basis = "child-protection";
    r.handling = "H2";
    r.rules = {"minor-to-youth-welfare", "referrals-of-children"};
    r.released = {"subject.pseudonym", "subject.given_name"};
    r.transformed = {"subject.date_of_birth"};
    r.dropped = {"subject.aliases", "", "subject.phone"};
    r.reason = "case-withdrawn:01M884MY1TRDW469YDTEXMFVPE";
    r.policy_version = "3bdba45fc557e7e4";
    r.sender_kind = "exit-programme";
    r.sender_region = "mombasa";
    r.recipient_kind = "youth-welfare";
    r.recipient_region = "mombasa";
    r.urgency = "green";
    r.response = "accepted";
    records.push_back(r);
  }
  {
    ledger::LedgerRecordT r;
    r.seq = 19;
    r.decision = ledger::Decision::checkpoint;
    r.signature = std::string(128, 'f');
    r.key_fingerprint = "6b205419aa4cd797";
    records.push_back(r);
  }
  {
    // Every character the printer escapes, control characters it does not,
    // and multi-byte UTF-8 (kept as it is).
    ledger::LedgerRecordT r;
    r.seq = 7;
    r.decision = ledger::Decision::policy_refused;
    r.agency = "quote\" backslash\\ slash/";
    r.file = "agencies/\n\t\r\b\f.yaml";
    r.file_hash = "\x7f";
    r.signer = "Zo\xc3\xab \xe2\x82\xac \xf0\x9f\x98\x80";
    r.previous_signer = "~ {}[],:";
    r.rules = {"\"", "\\", "\xc3\xa9"};
    records.push_back(r);
  }
  {
    // Response deadlines: an overdue record (its lateness and deadline at
    // the ends of their range) and a response naming its referral.
    ledger::LedgerRecordT r;
    r.seq = 23;
    r.decision = ledger::Decision::overdue;
    r.message_id = "01M884KGW8W14ZCA2CA0W0YHZ9";
    r.sender = "exit-mombasa";
    r.recipient = "youth-welfare-mombasa";
    r.urgency = "red";
    r.agency = "county-coordinator";
    r.late_seconds = 18446744073709551615ull;
    r.deadline_seconds = 14400;
    records.push_back(r);
    ledger::LedgerRecordT response;
    response.seq = 24;
    response.type = "ReferralResponse";
    response.response = "accepted";
    response.in_reply_to = ReferralLink("exit-mombasa", "01M884KGW8W14ZCA2CA0W0YHZ9");
    response.late_seconds = 1;
    records.push_back(response);
  }
  for (int d = 0; d <= static_cast<int>(ledger::Decision::MAX); ++d) {  // every decision there is
    ledger::LedgerRecordT r;
    r.seq = static_cast<uint64_t>(d) * 1000003;
    r.decision = static_cast<ledger::Decision>(d);
    r.message_id = "m" + std::to_string(d);
    records.push_back(r);
  }
  {
    // A control character other than those escaped goes out raw, as the
    // printer writes it (and its parser then refuses the line: records
    // hold names, which never contain one).
    ledger::LedgerRecordT r;
    r.reason = std::string("\x01\x1f", 2);
    EXPECT_EQ(printed(r), RecordJson(r));
  }
  for (const auto& r : records) {
    const std::string json = RecordJson(r);
    EXPECT_EQ(printed(r), json);
    // And it reads back as the same record.
    auto binary = codec.ToBinary(json, "test");
    ASSERT_TRUE(binary.ok()) << binary.status().ToString();
  }
}

}  // namespace
}  // namespace liaison::audit
