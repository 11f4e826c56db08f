// Attack on "every disclosure is in the ledger" together with "a message
// acknowledged as stored is never lost" and "any failed write means
// unavailable, never stored": a batch's ledger records and its stored copies
// are one decision, so however a batch ends (the broker killed inside its
// commit, the commit failing) the two must agree afterwards. After a clean
// stop the ledger file (wherever the broker keeps the records meanwhile, it
// brings that file up to date) must pass `liaison audit verify` and hold
// exactly one `released` record per row of the store's `messages` table,
// keyed (sender, message_id, recipient): none twice, none without its copy,
// no copy without its record; and one `denied` record per denial the sender
// was told of.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "audit/ledger.h"
#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using wire::Code;

// One copy of a message for one recipient: (sender, message_id, recipient).
using Copy = std::tuple<std::string, std::string, std::string>;
// What the sender was told per copy: stored or denied.
using Answers = std::map<Copy, Code>;

std::string Name(const Copy& c) {
  return std::get<0>(c) + "/" + std::get<1>(c) + " -> " + std::get<2>(c);
}

// The sender "a" and two recipients: "b" accepts everything, "c" only
// CaseUpdate, so every CaseClosure makes a copy for b and a denial for c.
struct Agencies {
  TestAgency sender = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency all = MakeAgency("b", "youth-welfare", "mombasa");
  TestAgency updates_only = [] {
    TestAgency c = MakeAgency("c", "health-service", "mombasa");
    c.rules =
        "accept:\n  - id: accept-updates\n    messages: [CaseUpdate]\n"
        "    fields: {others: allow}\n";
    return c;
  }();
  std::vector<TestAgency> list() const { return {sender, all, updates_only}; }
};

// `notes_bytes` of text make each message span a few WAL pages.
std::vector<uint8_t> Message(const std::string& id, bool closure, size_t notes_bytes) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "CASE-" + id;
  for (const char* to : {"b", "c"}) {
    e.to.push_back(std::make_unique<wire::RecipientT>());
    e.to.back()->agency = to;
  }
  if (closure) {
    wire::CaseClosureT c;
    c.summary = std::string(notes_bytes, 's');
    e.payload.Set(c);
  } else {
    wire::CaseUpdateT u;
    u.notes = std::string(notes_bytes, 'n');
    e.payload.Set(u);
  }
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// Adds what an `ok` receipt tells `sender` about each copy; fails on a
// per-recipient answer other than stored or denied.
Status Record(const wire::Receipt& r, const std::string& sender, Answers* answers) {
  const std::string id = r.message_id() ? r.message_id()->str() : "";
  if (!r.recipients()) return Status::Internal(id + ": an ok receipt without recipients");
  for (const wire::RecipientReceipt* rr : *r.recipients()) {
    const std::string to = rr->recipient() ? rr->recipient()->str() : "";
    if (rr->code() != Code::stored && rr->code() != Code::denied) {
      return Status::Internal(id + " -> " + to + ": answered " + wire::EnumNameCode(rr->code()));
    }
    answers->emplace(Copy{sender, id, to}, rr->code());
  }
  return Status::Ok();
}

// Sends pipelined on one connection and keeps every message until the
// broker answers it. A message answered busy or unavailable, or not at all
// within kResendAfter (the broker was killed, the connection is down), goes
// out again with the same id; a resend of a message the broker already
// decided gets the original receipt.
class ResendingSender {
 public:
  static constexpr auto kResendAfter = 1000ms;

  ResendingSender(std::unique_ptr<Agent> agent, std::string agency)
      : agent_(std::move(agent)), agency_(std::move(agency)) {}

  void Add(const std::string& id, std::vector<uint8_t> bytes) {
    waiting_[id] = {std::move(bytes), Clock::now()};
  }
  // After a restart: what is unanswered goes out again now, not at its timeout.
  void ResendAllNow() {
    for (auto& [id, m] : waiting_) m.due = Clock::now();
  }
  // Sends what is due, then waits up to `timeout` for one receipt. Fails on
  // a receipt that is neither ok, busy nor unavailable.
  Status Pump(std::chrono::milliseconds timeout) {
    const auto now = Clock::now();
    for (auto& [id, m] : waiting_) {
      if (m.due > now) continue;
      // While the broker is down the agent's queue may refuse: try again soon.
      m.due = agent_->SendFrames(wire::kSend, m.bytes).ok() ? now + kResendAfter : now + 100ms;
      ++sends_;
    }
    auto receipt = agent_->TakeReceipt(timeout);
    if (!receipt.ok()) return receipt.status();
    if (!receipt->has_value()) return Status::Ok();
    const wire::Receipt& r = *(*receipt)->get();
    const std::string id = r.message_id() ? r.message_id()->str() : "";
    auto it = waiting_.find(id);
    if (it == waiting_.end()) return Status::Ok();  // a resend's answer, already taken
    if (r.code() == Code::busy || r.code() == Code::unavailable) {
      ++retried_[r.code()];
      it->second.due = Clock::now() + 20ms;
      return Status::Ok();
    }
    if (r.code() != Code::ok) {
      return Status::Internal(id + ": answered " + wire::EnumNameCode(r.code()) + " (" +
                              (r.detail() ? r.detail()->str() : "") + ")");
    }
    LIAISON_RETURN_IF_ERROR(Record(r, agency_, &answers_));
    waiting_.erase(it);
    ++answered_;
    return Status::Ok();
  }

  size_t waiting() const { return waiting_.size(); }
  int answered() const { return answered_; }
  int sends() const { return sends_; }
  int retried(Code code) const { return retried_.count(code) ? retried_.at(code) : 0; }
  const Answers& answers() const { return answers_; }

 private:
  struct Unanswered {
    std::vector<uint8_t> bytes;
    Clock::time_point due;  // when it goes out (again)
  };
  std::unique_ptr<Agent> agent_;
  std::string agency_;
  std::map<std::string, Unanswered> waiting_;  // by message id
  Answers answers_;
  std::map<Code, int> retried_;
  int answered_ = 0, sends_ = 0;
};

// The ledger's `released` and `denied` records, counted per copy.
struct Decisions {
  std::map<Copy, int> released, denied;
  uint64_t records = 0;
};

StatusOr<Decisions> ReadDecisions(const std::string& ledger_path) {
  auto records = audit::ReadLedger(ledger_path);
  if (!records.ok()) return records.status();
  Decisions d;
  for (const auto& bytes : *records) {
    const auto* r = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
    ++d.records;
    auto text = [](const flatbuffers::String* s) { return s ? s->str() : std::string(); };
    const Copy copy{text(r->sender()), text(r->message_id()), text(r->recipient())};
    if (r->decision() == ledger::Decision::released) ++d.released[copy];
    if (r->decision() == ledger::Decision::denied) ++d.denied[copy];
  }
  return d;
}

// The rows of the store's `messages` table (every state: a row is a copy
// that was stored), read with SQLite itself, read-only, the broker stopped.
StatusOr<std::map<Copy, int>> StoredCopies(const std::string& store_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(store_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    Status st = Status::IoError(store_path + ": " + sqlite3_errmsg(db));
    sqlite3_close(db);
    return st;
  }
  sqlite3_stmt* rows = nullptr;
  std::map<Copy, int> copies;
  int rc = sqlite3_prepare_v2(db, "SELECT sender, message_id, recipient FROM messages", -1, &rows, nullptr);
  if (rc == SQLITE_OK) {
    auto text = [&](int column) {
      const unsigned char* t = sqlite3_column_text(rows, column);
      return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
    };
    while ((rc = sqlite3_step(rows)) == SQLITE_ROW) ++copies[Copy{text(0), text(1), text(2)}];
  }
  Status st = rc == SQLITE_DONE ? Status::Ok() : Status::IoError(store_path + ": " + sqlite3_errmsg(db));
  sqlite3_finalize(rows);
  sqlite3_close(db);
  if (!st.ok()) return st;
  return copies;
}

// Where the ledger, the store and the answers disagree: the copies, by what
// is wrong with them. `refused` are (sender, id) answered unavailable and
// never sent again: nothing of them may be in the ledger.
using Disagreements = std::map<std::string, std::vector<Copy>>;

Disagreements FindDisagreements(const Decisions& ledger, const std::map<Copy, int>& store,
                                const Answers& answers,
                                const std::set<std::pair<std::string, std::string>>& refused) {
  Disagreements found;
  auto count = [](const std::map<Copy, int>& m, const Copy& c) {
    auto it = m.find(c);
    return it == m.end() ? 0 : it->second;
  };
  for (const auto& [copy, n] : ledger.released) {
    if (n > 1) found["released record more than once"].push_back(copy);
    if (count(store, copy) == 0) found["released record without a stored copy"].push_back(copy);
  }
  for (const auto& [copy, n] : store) {
    if (n > 1) found["more than one row in the store"].push_back(copy);
    if (count(ledger.released, copy) == 0) found["stored copy without a released record"].push_back(copy);
  }
  for (const auto& [copy, n] : ledger.denied) {
    if (n > 1) found["denied record more than once"].push_back(copy);
  }
  for (const auto& [copy, code] : answers) {
    if (code == Code::stored) {
      if (count(store, copy) == 0) found["answered stored, not in the store"].push_back(copy);
      if (count(ledger.released, copy) == 0) found["answered stored, no released record"].push_back(copy);
    } else if (count(ledger.denied, copy) == 0) {
      found["answered denied, no denied record"].push_back(copy);
    }
  }
  for (const auto* decided : {&ledger.released, &ledger.denied}) {
    for (const auto& [copy, n] : *decided) {
      if (refused.count({std::get<0>(copy), std::get<1>(copy)})) {
        found["answered unavailable (not sent again), yet in the ledger"].push_back(copy);
      }
    }
  }
  return found;
}

std::string Summarise(const Disagreements& found) {
  std::string out = "the ledger and the store disagree:";
  for (const auto& [what, copies] : found) {
    out += "\n  " + what + ": " + std::to_string(copies.size()) + " copies, e.g.";
    for (size_t i = 0; i < copies.size() && i < 4; ++i) out += (i ? ", " : " ") + Name(copies[i]);
  }
  return out;
}

// The whole check, on a stopped broker. Returns the decisions and copies
// for the test's summary line.
void ExpectLedgerAndStoreAgree(const BrokerProcess& broker, const Answers& answers,
                               const std::set<std::pair<std::string, std::string>>& refused,
                               Decisions* decisions, std::map<Copy, int>* store) {
  auto key = audit::LoadVerifyKey(broker.ledger_public_key());
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  const audit::VerifyReport report = audit::VerifyLedger(broker.ledger_path(), key->get());
  EXPECT_TRUE(report.ok) << report.Summary();
  auto read = ReadDecisions(broker.ledger_path());
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  auto copies = StoredCopies(broker.store_path());
  ASSERT_TRUE(copies.ok()) << copies.status().ToString();
  const Disagreements found = FindDisagreements(*read, *copies, answers, refused);
  EXPECT_TRUE(found.empty()) << Summarise(found);
  *decisions = std::move(*read);
  *store = std::move(*copies);
}

size_t CountAnswered(const Answers& answers, Code code) {
  return std::count_if(answers.begin(), answers.end(), [&](const auto& a) { return a.second == code; });
}

TEST(LedgerStoreConsistencyTest, KilledInsideCommitsTheLedgerAndStoreAgree) {
  constexpr int kKills = 25;
  constexpr size_t kWindow = 64;        // messages in flight (below the broker's in-flight limit)
  constexpr int kMaxKillDelayMs = 250;  // after the first answer since the restart
  const auto test_deadline = Clock::now() + 40s;
  TempDir dir;
  const Agencies agencies;
  BrokerProcess broker(dir, agencies.list());
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  const std::string endpoint = broker.endpoint();

  auto agent = Agent::Connect(broker.AgentFor(agencies.sender));
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  ASSERT_TRUE((*agent)->WaitReady(5000ms).ok());
  ResendingSender sender(std::move(*agent), agencies.sender.id);
  int next = 0;
  auto pump = [&](std::chrono::milliseconds timeout) {
    while (sender.waiting() < kWindow) {
      const std::string id = "k-" + std::to_string(next);
      sender.Add(id, Message(id, /*closure=*/next % 3 == 2, 1500));
      ++next;
    }
    return sender.Pump(timeout);
  };

  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> delay_ms(0, kMaxKillDelayMs);
  int kills = 0;
  for (; kills < kKills && Clock::now() < test_deadline; ++kills) {
    // Kill only while messages flow: wait for an answer from this broker.
    const int before = sender.answered();
    const auto progress_deadline = Clock::now() + 5s;
    while (sender.answered() == before && Clock::now() < progress_deadline) {
      Status st = pump(20ms);
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    ASSERT_GT(sender.answered(), before) << "no answer within 5 s after restart " << kills << "; log:\n"
                                         << broker.log();
    const auto kill_at = Clock::now() + std::chrono::milliseconds(delay_ms(rng));
    while (Clock::now() < kill_at) {
      Status st = pump(std::chrono::duration_cast<std::chrono::milliseconds>(
          std::clamp<Clock::duration>(kill_at - Clock::now(), 0ms, 5ms)));
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    EXPECT_EQ(-SIGKILL, broker.Stop(SIGKILL));
    Status st = broker.Start(endpoint);
    ASSERT_TRUE(st.ok()) << st.ToString();
    sender.ResendAllNow();
  }

  // No new messages: every one sent so far gets its answer.
  const auto drain_deadline = Clock::now() + 15s;
  while (sender.waiting() > 0 && Clock::now() < drain_deadline) {
    Status st = sender.Pump(50ms);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  ASSERT_EQ(0u, sender.waiting()) << "messages without an answer 15 s after the last restart";
  ASSERT_EQ(0, broker.Stop(SIGTERM)) << broker.log();

  Decisions ledger;
  std::map<Copy, int> store;
  ExpectLedgerAndStoreAgree(broker, sender.answers(), /*refused=*/{}, &ledger, &store);
  // How many starts found the ledger file and the store apart (informational:
  // the kills that landed between the two writes).
  const std::string log = broker.log();
  int repairs = 0;
  for (size_t at = log.find("event=ledger_repaired"); at != std::string::npos;
       at = log.find("event=ledger_repaired", at + 1)) {
    ++repairs;
  }
  std::printf(
      "ledger/store consistency under kills (seed %u): %d kills (%d starts repaired the ledger "
      "file), %d messages answered (%zu copies stored, %zu denied; %d sends, %d busy, %d "
      "unavailable); ledger: %llu records, %zu released copies, %zu denied; store: %zu rows\n",
      seed, kills, repairs, sender.answered(), CountAnswered(sender.answers(), Code::stored),
      CountAnswered(sender.answers(), Code::denied), sender.sends(), sender.retried(Code::busy),
      sender.retried(Code::unavailable), static_cast<unsigned long long>(ledger.records),
      ledger.released.size(), ledger.denied.size(), store.size());
  EXPECT_EQ(kKills, kills) << "the test ran out of time";
}

TEST(LedgerStoreConsistencyTest, AFailingCommitLeavesNoReleasedRecordWithoutItsCopy) {
  constexpr size_t kNotesBytes = 3000;  // a few WAL pages per message
  TempDir dir;
  const Agencies agencies;
  BrokerProcess broker(dir, agencies.list());
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  const std::string endpoint = broker.endpoint();
  Answers answers;
  auto send = [&](Agent& agent, const std::string& id, bool closure) -> StatusOr<Code> {
    auto receipt = agent.Send(Message(id, closure, kNotesBytes));
    if (!receipt.ok()) return receipt.status();
    if ((*receipt)->code() == Code::ok) {
      LIAISON_RETURN_IF_ERROR(Record(*receipt->get(), agencies.sender.id, &answers));
    }
    return (*receipt)->code();
  };
  {
    auto a = Agent::Connect(broker.AgentFor(agencies.sender));
    ASSERT_TRUE(a.ok());
    auto code = send(**a, "warm-up", false);
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    ASSERT_EQ(Code::ok, *code);
  }
  ASSERT_EQ(0, broker.Stop(SIGTERM));  // checkpoints: the WAL starts empty again

  // Room for a few commits in the store's WAL, far less than 300 messages.
  uintmax_t largest = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.is_regular_file()) largest = std::max(largest, entry.file_size());
  }
  ASSERT_TRUE(broker.StartWithFileSizeLimit(largest + 96 * 1024, endpoint).ok()) << broker.log();
  std::vector<std::string> unavailable;
  int stored_messages = 0;
  {
    auto a = Agent::Connect(broker.AgentFor(agencies.sender));
    ASSERT_TRUE(a.ok());
    for (int i = 0; i < 300 && unavailable.size() < 6; ++i) {
      const std::string id = "f-" + std::to_string(i);
      auto code = send(**a, id, /*closure=*/i % 2 == 1);
      ASSERT_TRUE(code.ok()) << code.status().ToString();
      if (*code == Code::unavailable) {
        unavailable.push_back(id);
        continue;
      }
      ASSERT_EQ(Code::ok, *code) << id;
      ++stored_messages;
    }
  }
  ASSERT_GT(stored_messages, 0) << "the limit left no room at all; log:\n" << broker.log();
  ASSERT_FALSE(unavailable.empty()) << "no write failed; log:\n" << broker.log();
  ASSERT_NE(std::string::npos, broker.log().find("event=commit_failed")) << "no commit failed";
  ASSERT_TRUE(broker.running());
  EXPECT_EQ(0, broker.Stop(SIGTERM)) << broker.log();

  // Room again. Half of the refused messages are sent again (same id) and
  // must be stored once, with one record; the other half never were.
  ASSERT_TRUE(broker.Start(endpoint).ok()) << broker.log();
  const size_t resent = (unavailable.size() + 1) / 2;
  {
    auto a = Agent::Connect(broker.AgentFor(agencies.sender));
    ASSERT_TRUE(a.ok());
    for (size_t i = 0; i < resent; ++i) {
      const int n = std::stoi(unavailable[i].substr(2));
      auto code = send(**a, unavailable[i], n % 2 == 1);
      ASSERT_TRUE(code.ok()) << code.status().ToString();
      EXPECT_EQ(Code::ok, *code) << unavailable[i] << " sent again with room";
    }
  }
  ASSERT_EQ(0, broker.Stop(SIGTERM)) << broker.log();

  Decisions ledger;
  std::map<Copy, int> store;
  std::set<std::pair<std::string, std::string>> refused;
  for (size_t i = resent; i < unavailable.size(); ++i) refused.insert({agencies.sender.id, unavailable[i]});
  ExpectLedgerAndStoreAgree(broker, answers, refused, &ledger, &store);
  std::printf(
      "ledger/store consistency with failing commits: %d messages stored under the limit, %zu "
      "answered unavailable (%zu sent again with room); ledger: %llu records, %zu released copies, "
      "%zu denied; store: %zu rows\n",
      stored_messages, unavailable.size(), resent, static_cast<unsigned long long>(ledger.records),
      ledger.released.size(), ledger.denied.size(), store.size());
}

}  // namespace
}  // namespace liaison::testing
