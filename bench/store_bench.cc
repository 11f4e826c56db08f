// Store-and-forward with durability on, through the real broker process on
// loopback with CURVE: throughput of 2 KiB referrals from sending to the
// recipient application, and end-to-end latency at a fixed offered load.
// Each figure is the median of 3 runs. `make bench` runs it.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A ~2 KiB CaseReferral whose reason carries the send time (for latency).
std::vector<uint8_t> Referral(const std::string& id, int64_t sent_ns) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = "BENCH-" + id;
  e.purpose = "referral-for-services";
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = "receiver";
  wire::CaseReferralT c;
  c.subject = std::make_unique<wire::SubjectT>();
  c.subject->given_name = "Amani";
  c.subject->family_name = "Example";
  c.subject->date_of_birth = "2009-05-14";
  c.subject->national_id = "00000042";
  c.reason = std::to_string(sent_ns);
  c.counselling_notes = std::string(1800, 'n');
  e.payload.Set(c);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

int64_t Now() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

struct Run {
  double throughput = 0;  // msg/s received by the application
  double p50_ms = 0, p99_ms = 0;
  size_t bytes = 0;
};

// Sends `total` messages from `senders` threads; if `rate` > 0, paced to
// that many messages per second overall. Returns when all were received.
Run Once(int total, int senders, double rate) {
  testing::TempDir dir;
  auto sender = testing::MakeAgency("sender", "exit-programme", "mombasa");
  auto receiver = testing::MakeAgency("receiver", "youth-welfare", "mombasa");
  testing::BrokerProcess broker(dir, {sender, receiver}, "");
  if (!broker.Start().ok()) std::abort();
  std::mutex mu;
  std::vector<double> latencies;
  std::atomic<int> received{0};
  std::atomic<bool> stop{false};
  std::thread recv([&] {
    auto agent = Agent::Connect(broker.AgentFor(receiver, wire::Role::receiver));
    (void)(*agent)->WaitReady(5000ms);
    while (!stop) {
      auto m = (*agent)->Receive(100ms);
      if (!m.ok() || !m->has_value()) continue;
      const int64_t sent = std::stoll((**m)->payload_as_CaseReferral()->reason()->str());
      {
        std::lock_guard<std::mutex> lock(mu);
        latencies.push_back((Now() - sent) / 1e6);
      }
      (void)(*agent)->Ack((**m)->id()->string_view());
      received++;
    }
  });
  std::this_thread::sleep_for(300ms);
  size_t bytes = Referral("x", Now()).size();
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < senders; ++t) {
    threads.emplace_back([&, t] {
      auto agent = Agent::Connect(broker.AgentFor(sender, wire::Role::sender));
      const auto interval = rate > 0 ? std::chrono::nanoseconds(static_cast<int64_t>(1e9 * senders / rate))
                                     : std::chrono::nanoseconds(0);
      auto next = Clock::now() + std::chrono::nanoseconds(static_cast<int64_t>(interval.count() * t / senders));
      for (int i = t; i < total; i += senders) {
        if (rate > 0) {
          std::this_thread::sleep_until(next);
          next += interval;
        }
        auto r = (*agent)->Send(Referral("m" + std::to_string(i), Now()));
        if (!r.ok() || (*r)->recipients()->Get(0)->code() != wire::Code::stored) std::abort();
      }
    });
  }
  for (auto& t : threads) t.join();
  while (received < total) std::this_thread::sleep_for(1ms);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  recv.join();
  broker.Stop(SIGTERM);
  std::sort(latencies.begin(), latencies.end());
  Run r;
  r.throughput = total / seconds;
  r.p50_ms = latencies[latencies.size() / 2];
  r.p99_ms = latencies[latencies.size() * 99 / 100];
  r.bytes = bytes;
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace
}  // namespace liaison

int main(int argc, char** argv) {
  const int total = argc > 1 ? std::atoi(argv[1]) : 20000;
  const double rate = argc > 2 ? std::atof(argv[2]) : 2000;
  std::vector<double> tput, p50, p99;
  size_t bytes = 0;
  for (int i = 0; i < 3; ++i) {
    auto r = liaison::Once(total, 16, 0);
    tput.push_back(r.throughput);
    bytes = r.bytes;
    auto paced = liaison::Once(static_cast<int>(rate * 5), 16, rate);
    p50.push_back(paced.p50_ms);
    p99.push_back(paced.p99_ms);
  }
  std::printf("store-and-forward (durable, group commit per reactor batch, max 256 msgs; %zu-byte referrals)\n", bytes);
  std::printf("  throughput, 16 senders, %d messages:   median %.0f msg/s   (runs: %.0f %.0f %.0f)\n", total,
              liaison::Median(tput), tput[0], tput[1], tput[2]);
  std::printf("  latency at %.0f msg/s offered, send -> recipient app:  p50 %.2f ms  p99 %.2f ms (medians of 3)\n",
              rate, liaison::Median(p50), liaison::Median(p99));
  return 0;
}
