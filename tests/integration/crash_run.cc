// The crash run of crash_run.h.
//
// The broker runs with the deployed rate limit and a low in-flight limit
// (see below), so the senders are answered `busy`; they do what every
// sender must: wait a little and resend the same message with the same id
// (the broker's dedupe makes a resend safe), and the same for `unavailable`.
// Any other receipt, or a sender that cannot go on, fails the test at once;
// every wait ends at a deadline scaled to the message count, so the test
// may fail but never hangs.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iterator>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "integration/crash_run.h"
#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using wire::Code;

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

// A message's identity at the application: ids are unique per sender only.
std::string MessageKey(std::string_view sender, std::string_view id) {
  return std::string(sender) + "/" + std::string(id);
}

// The keys of `a` that are not in `b`.
std::set<std::string> Minus(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::set<std::string> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::inserter(out, out.end()));
  return out;
}

// What the producers, the receiver and the kill loop share. The first
// failure stops every loop; so does the deadline.
class CrashRun {
 public:
  explicit CrashRun(Clock::time_point deadline) : deadline_(deadline) {}

  void Fail(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_.empty()) failure_ = what;
    failed_ = true;
  }
  bool ShouldStop() const { return failed_ || Clock::now() >= deadline_; }
  Clock::time_point deadline() const { return deadline_; }

  void Stored(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    stored_.insert(key);
    stored_count_ = static_cast<int>(stored_.size());
  }
  void Received(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    received_.insert(key);
    distinct_received_.insert(key);
  }
  int stored_count() const { return stored_count_; }
  bool AllStoredReceived() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::includes(distinct_received_.begin(), distinct_received_.end(), stored_.begin(),
                         stored_.end());
  }

  // Read once every thread has been joined.
  const std::set<std::string>& stored() const { return stored_; }
  const std::multiset<std::string>& received() const { return received_; }
  const std::set<std::string>& distinct_received() const { return distinct_received_; }
  std::string failure() const { return failure_; }

  std::atomic<int> busy{0};         // `busy` receipts, each followed by a resend
  std::atomic<int> unavailable{0};  // `unavailable` receipts, likewise
  std::atomic<int> ack_errors{0};   // acks that could not go out (the broker redelivers)

 private:
  const Clock::time_point deadline_;
  std::mutex mu_;
  std::set<std::string> stored_;             // guarded by mu_: the sender saw "stored"
  std::multiset<std::string> received_;      // guarded by mu_: each time the application got one
  std::set<std::string> distinct_received_;  // guarded by mu_
  std::string failure_;                      // guarded by mu_: the first failure
  std::atomic<bool> failed_{false};
  std::atomic<int> stored_count_{0};
};

// Waits before a resend: full jitter over a window that doubles with each
// `busy` in a row (from 5 ms up to 200 ms), so the senders spread out.
class Backoff {
 public:
  explicit Backoff(unsigned seed) : rng_(seed) {}
  void Wait() {
    std::uniform_int_distribution<int> pick(1, window_ms_);
    std::this_thread::sleep_for(std::chrono::milliseconds(pick(rng_)));
    window_ms_ = std::min(200, window_ms_ * 2);
  }
  void Reset() { window_ms_ = 5; }

 private:
  std::mt19937 rng_;
  int window_ms_ = 5;
};

// One sender connection: messages t, t + senders, ... each sent until the
// broker answers "stored". Returns early (after Fail) on anything else.
void Produce(AgentOptions options, const TestAgency& agency, int t, int senders, int total, CrashRun* run) {
  // Rides out a restart (Send resends the same id meanwhile); shorter than
  // the run's deadline, so a broker that never comes back fails the test.
  options.receipt_timeout = 30000ms;
  options.resend_interval = 1000ms;
  auto agent = Agent::Connect(options);
  if (!agent.ok()) return run->Fail("sender " + std::to_string(t) + ": " + agent.status().ToString());
  Backoff backoff(static_cast<unsigned>(t));
  for (int i = t; i < total && !run->ShouldStop();) {
    const std::string id = "m" + std::to_string(i);
    auto receipt = (*agent)->Send(Message(id));
    if (!receipt.ok()) return run->Fail(id + ": " + receipt.status().ToString());
    const wire::Receipt* r = receipt->get();
    if (r->code() == Code::busy || r->code() == Code::unavailable) {
      ++(r->code() == Code::busy ? run->busy : run->unavailable);
      backoff.Wait();
      continue;  // the same id again
    }
    const std::string detail = r->detail() ? r->detail()->str() : "";
    if (!r->message_id() || r->message_id()->str() != id) {
      const std::string other = r->message_id() ? r->message_id()->str() : "";
      return run->Fail(id + ": receipt for another message: " + other);
    }
    if (r->code() != Code::ok) {
      return run->Fail(id + ": whole message answered " + wire::EnumNameCode(r->code()) + " " + detail);
    }
    if (!r->recipients() || r->recipients()->size() != 1) {
      return run->Fail(id + ": the receipt does not name the one recipient");
    }
    if (r->recipients()->Get(0)->code() != Code::stored) {
      return run->Fail(id + ": the recipient was answered " +
                       wire::EnumNameCode(r->recipients()->Get(0)->code()));
    }
    run->Stored(MessageKey(agency.id, id));
    backoff.Reset();
    i += senders;
  }
}

// The recipient application: records every message it is handed, and acks it.
void Receive(AgentOptions options, const std::atomic<bool>& stop, CrashRun* run) {
  auto agent = Agent::Connect(options);
  if (!agent.ok()) return run->Fail("receiver: " + agent.status().ToString());
  while (!stop) {
    auto m = (*agent)->Receive(200ms);
    if (!m.ok()) return run->Fail("receiver: " + m.status().ToString());
    if (!m->has_value()) continue;
    const wire::Envelope* e = (*m)->get();
    const std::string_view from = e->from() ? e->from()->string_view() : "";
    run->Received(MessageKey(from, e->id()->string_view()));
    // A lost ack (the broker was down) is redelivered and acked again by
    // the agent; the application must not see it twice.
    if (!(*agent)->Ack(from, e->id()->string_view()).ok()) ++run->ack_errors;
  }
}

// Kills the broker with SIGKILL `kills` times, each at a random point of the
// stream, and restarts it on the same endpoint. Returns the kills done.
int KillAndRestart(BrokerProcess* broker, int total, int kills, CrashRun* run) {
  const std::string endpoint = broker->endpoint();
  std::mt19937 rng(42);
  for (int k = 0; k < kills; ++k) {
    const int at = static_cast<int>((k + 1) * total / (kills + 1) + rng() % (total / (4 * (kills + 1)) + 1));
    while (run->stored_count() < at && !run->ShouldStop()) std::this_thread::sleep_for(5ms);
    if (run->ShouldStop()) return k;
    broker->Stop(SIGKILL);
    Status st = broker->Start(endpoint);
    if (!st.ok()) {
      run->Fail("restart after kill " + std::to_string(k + 1) + ": " + st.ToString());
      return k + 1;
    }
  }
  return kills;
}

// How often `needle` is in `broker`'s log.
size_t CountInLog(const BrokerProcess& broker, const std::string& needle) {
  const std::string log = broker.log();
  size_t n = 0;
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + needle.size())) ++n;
  return n;
}

// The same for a pair of brokers on one store: each kill is of the active
// one; the other takes the lease over, and only then is the killed one
// restarted (as the standby: a broker restarted at once would take its own
// unexpired lease back). Records the time from each kill to the next
// "stored" receipt in `failovers` (seconds; negative if none came).
int KillActiveAndRestart(BrokerProcess* first, BrokerProcess* second, int total, int kills, CrashRun* run,
                         std::vector<double>* failovers, BrokerProcess** last_active) {
  std::mt19937 rng(42);
  BrokerProcess*& active = *last_active;
  active = first;
  BrokerProcess* standby = second;
  for (int k = 0; k < kills; ++k) {
    const int at = static_cast<int>((k + 1) * total / (kills + 1) + rng() % (total / (4 * (kills + 1)) + 1));
    while (run->stored_count() < at && !run->ShouldStop()) std::this_thread::sleep_for(5ms);
    if (run->ShouldStop()) return k;
    const size_t activations = CountInLog(*standby, "event=ha_active");
    const int stored_before = run->stored_count();
    active->Stop(SIGKILL);
    const auto killed = Clock::now();
    while (CountInLog(*standby, "event=ha_active") == activations && !run->ShouldStop()) {
      std::this_thread::sleep_for(20ms);
    }
    while (run->stored_count() == stored_before && !run->ShouldStop()) std::this_thread::sleep_for(5ms);
    failovers->push_back(run->ShouldStop() ? -1 : std::chrono::duration<double>(Clock::now() - killed).count());
    if (run->ShouldStop()) return k + 1;
    Status st = active->Start(active->endpoint());
    if (!st.ok()) {
      run->Fail("restart after kill " + std::to_string(k + 1) + ": " + st.ToString());
      return k + 1;
    }
    std::swap(active, standby);
  }
  return kills;
}

}  // namespace

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

void RunCrashTest(const CrashRunOptions& options) {
  const int total = options.total;
  const int kills = options.kills;
  const int senders = options.senders;
  // Every wait ends by then. Generous, for a shared machine: on 2 cores
  // with builds beside it, the default run took 10 s of its 80, the soak
  // 90 s of its 260. The default stays under ctest's 120 s timeout.
  const auto budget = 60s + total * 2ms + (options.standby_pair ? kills * 15s : 0s);
  TempDir dir;
  TestAgency exit = MakeAgency("exit-a", "exit-programme", "mombasa");
  TestAgency youth = MakeAgency("youth-b", "youth-welfare", "mombasa");
  // The in-flight limit is deliberately lowered below the number of senders
  // (16): past 12 of their messages waiting for one commit, the rest are
  // answered `busy`. That happens in every run, not only on a machine fast
  // enough to outrun rate_per_agency, so each run proves the resend path,
  // kills included. The rate limit stays as deployed.
  const std::string limits = "limits:\n  max_in_flight_per_agency: 12\n";
  BrokerProcess broker(dir, {exit, youth}, limits, /*production_defaults=*/false, options.store_settings);
  TempDir second_dir;
  std::unique_ptr<BrokerProcess> second;
  if (options.standby_pair) {
    second = std::make_unique<BrokerProcess>(second_dir, std::vector<TestAgency>{exit, youth}, limits,
                                             /*production_defaults=*/false, options.store_settings);
    ASSERT_TRUE(second->ShareKeysOf(broker).ok());
  }
  ASSERT_TRUE(broker.Start().ok()) << broker.log();
  if (second) {
    ASSERT_TRUE(broker.WaitForLog("event=ha_active", 10000)) << broker.log();
    ASSERT_TRUE(second->Start().ok()) << second->log();
    ASSERT_TRUE(second->WaitForLog("event=ha_standby", 10000)) << second->log();
  }
  // The agents know every broker (one endpoint, or both of a pair).
  auto agent_options = [&](const TestAgency& agency, wire::Role role) {
    AgentOptions o = broker.AgentFor(agency, role);
    if (second) {
      o.broker_endpoints = {broker.endpoint(), second->endpoint()};
      o.broker_endpoint.clear();
    }
    return o;
  };

  const auto started = Clock::now();
  CrashRun run(started + budget);
  std::atomic<bool> stop_receiving{false};
  std::thread receiver(Receive, agent_options(youth, wire::Role::receiver), std::cref(stop_receiving), &run);
  std::vector<std::thread> producers;
  for (int t = 0; t < senders; ++t) {
    producers.emplace_back(Produce, agent_options(exit, wire::Role::sender), std::cref(exit), t, senders, total,
                           &run);
  }
  std::vector<double> failovers;
  BrokerProcess* active = &broker;
  const int kills_done = second ? KillActiveAndRestart(&broker, second.get(), total, kills, &run, &failovers, &active)
                                : KillAndRestart(&broker, total, kills, &run);
  for (auto& p : producers) p.join();

  while (!run.ShouldStop() && !run.AllStoredReceived()) std::this_thread::sleep_for(100ms);
  const bool in_time = Clock::now() < run.deadline();
  if (!run.ShouldStop()) std::this_thread::sleep_for(500ms);  // any late duplicate would show now
  stop_receiving = true;
  receiver.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();

  const auto& stored = run.stored();
  const auto& distinct = run.distinct_received();
  const std::set<std::string> missing = Minus(stored, distinct);
  const std::set<std::string> unexpected = Minus(distinct, stored);
  const size_t duplicates = run.received().size() - distinct.size();
  std::printf(
      "crash test (%s): %d messages, %zu stored, %zu received (%zu of the stored missing, %zu duplicates), "
      "%d of %d kills, %d busy and %d unavailable receipts answered by a resend, %d acks failed, %.1f s\n",
      options.store_name.c_str(), total, stored.size(), distinct.size(), missing.size(), duplicates, kills_done, kills, run.busy.load(),
      run.unavailable.load(), run.ack_errors.load(), seconds);

  if (second) {
    std::string times;
    for (double f : failovers) times += (times.empty() ? "" : ", ") + std::to_string(f).substr(0, 5) + " s";
    std::printf("failovers (SIGKILL of the active broker -> next stored receipt, from the other broker): %s\n",
                times.c_str());
    for (double f : failovers) EXPECT_GE(f, 0) << "no message was stored after a kill";
#ifdef LIAISON_CLI_BIN
    // The active broker's ledger file holds the database's whole chain.
    EXPECT_EQ(0, active->Stop(SIGTERM));
    std::string out, err;
    EXPECT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", active->ledger_path(), "--public-key",
                             broker.ledger_public_key()},
                            &out, &err))
        << out << err;
#endif
  }
  EXPECT_EQ(0u, duplicates) << "the application saw a message twice";
  // A run cut short says why; what it had not delivered yet is not lost.
  ASSERT_EQ(run.failure(), "") << "a sender, the receiver or a restart failed";
  ASSERT_TRUE(in_time) << "not done within "
                       << std::chrono::duration_cast<std::chrono::seconds>(budget).count() << " s";
  EXPECT_EQ(total, static_cast<int>(stored.size())) << "messages answered stored";
  EXPECT_EQ(kills, kills_done);
  EXPECT_TRUE(missing.empty()) << missing.size()
                               << " messages answered stored never reached the application, e.g. "
                               << (missing.empty() ? "" : *missing.begin());
  EXPECT_TRUE(unexpected.empty()) << unexpected.size() << " messages reached the application but were never "
                                  << "answered stored, e.g. "
                                  << (unexpected.empty() ? "" : *unexpected.begin());
}

}  // namespace liaison::testing
