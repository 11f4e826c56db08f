#include "load.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <unistd.h>

namespace liaison::bench {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

double Percentile(const std::vector<int64_t>& sorted_ns, double q) {
  if (sorted_ns.empty()) return 0;
  const size_t i = std::min(sorted_ns.size() - 1, static_cast<size_t>(q * sorted_ns.size()));
  return sorted_ns[i] / 1e6;
}

// What one pair's two threads share. Post times by message number: the
// receiver reads a slot only after the message came back through the
// system, which the sender posted after writing the slot, but the two
// threads share no lock: hence atomics.
struct PairRun {
  PairRun(LoadPair c, uint64_t first, uint64_t messages) : clients(c), first_seq(first), posted(messages) {
    latency_ns.reserve(messages);
  }
  LoadPair clients;
  uint64_t first_seq;
  std::vector<std::atomic<int64_t>> posted;
  std::vector<int64_t> latency_ns;             // the receiver thread's
  std::atomic<bool> stop{false};               // the sender is done (or gave up)
  bool stopped_for_other = false;              // the sender gave up because another client failed
  std::atomic<int64_t> last_received_ns{0};
  std::atomic<uint64_t> received_count{0};
  std::atomic<bool> receiver_failed{false};
  Status receiver_status = Status::Ok();       // written by the receiver thread before it ends
  Status sender_status = Status::Ok();         // written by the sender thread before it ends
};

void ReceiveAll(PairRun& run, uint64_t messages) {
  uint64_t received = 0;
  while (received < messages && !run.stop) {
    auto got = run.clients.receiver->Receive(std::chrono::milliseconds(100));
    if (!got.ok()) {
      run.receiver_status = got.status();
      run.receiver_failed = true;
      return;
    }
    if (!got->has_value()) continue;
    const uint64_t seq = **got;
    const int64_t now = NowNs();
    if (seq < run.first_seq || seq >= run.first_seq + messages) continue;  // an old run's
    const int64_t sent = run.posted[seq - run.first_seq].load(std::memory_order_acquire);
    if (sent == 0) continue;  // a redelivery of one already counted
    run.posted[seq - run.first_seq].store(0, std::memory_order_relaxed);
    run.latency_ns.push_back(now - sent);
    ++received;
    run.last_received_ns.store(now, std::memory_order_release);
    run.received_count.store(received, std::memory_order_release);
  }
}

// Posts the pair's messages, waits for their confirmations and then for
// the receiver to have them all. Gives up at `deadline` or when another
// pair failed (`abort`).
Status SendAll(PairRun& run, const LoadSpec& spec, Clock::time_point start, Clock::time_point deadline,
               const std::atomic<bool>& abort) {
  SenderClient& sender = *run.clients.sender;
  auto expired = [&](const char* what) -> Status {
    if (abort) {
      run.stopped_for_other = true;
      return Status::Unavailable("stopped: another client failed");
    }
    if (Clock::now() > deadline) return Status::DeadlineExceeded(what);
    return Status::Ok();
  };
  const auto interval = spec.rate > 0 ? std::chrono::nanoseconds(static_cast<int64_t>(1e9 / spec.rate))
                                      : std::chrono::nanoseconds(0);
  auto next = start;
  uint64_t confirmed = 0;
  for (uint64_t i = 0; i < spec.messages; ++i) {
    int64_t due_ns = 0;
    if (spec.rate > 0) {
      // Open loop: a message is due at its slot whatever happened before,
      // and its latency counts from then, so a stall (the window full, the
      // system pushing back) shows up as latency rather than as a quietly
      // lower offered load.
      std::this_thread::sleep_until(next);
      due_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(next.time_since_epoch()).count();
      next += interval;
    }
    while (i - confirmed >= spec.window) {
      LIAISON_RETURN_IF_ERROR(expired("confirmations stopped coming"));
      auto n = sender.Confirmed(std::chrono::milliseconds(100));
      if (!n.ok()) return n.status();
      confirmed += *n;
    }
    run.posted[i].store(due_ns != 0 ? due_ns : NowNs(), std::memory_order_release);
    LIAISON_RETURN_IF_ERROR(sender.Post(run.first_seq + i));
    auto n = sender.Confirmed(std::chrono::milliseconds(0));
    if (!n.ok()) return n.status();
    confirmed += *n;
  }
  while (confirmed < spec.messages) {
    LIAISON_RETURN_IF_ERROR(expired("not every message was confirmed in time"));
    auto n = sender.Confirmed(std::chrono::milliseconds(100));
    if (!n.ok()) return n.status();
    confirmed += *n;
  }
  while (!run.receiver_failed && run.received_count < spec.messages) {
    LIAISON_RETURN_IF_ERROR(expired("not every message was received in time"));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<LoadResult> RunLoad(const std::vector<LoadPair>& pairs, const LoadSpec& spec) {
  if (pairs.empty()) return Status::InvalidArgument("no sender/receiver pair to load");
  std::vector<std::unique_ptr<PairRun>> runs;
  for (size_t k = 0; k < pairs.size(); ++k) {
    runs.push_back(std::make_unique<PairRun>(pairs[k], spec.first_seq + k * spec.messages, spec.messages));
  }
  std::atomic<bool> abort{false};
  const auto deadline = Clock::now() + spec.timeout;
  const auto start = Clock::now();
  const int64_t start_ns = NowNs();
  std::vector<std::thread> threads;
  for (auto& run : runs) {
    threads.emplace_back([&run = *run, &spec, &abort] {
      ReceiveAll(run, spec.messages);
      if (run.receiver_failed) abort = true;
    });
    threads.emplace_back([&run = *run, &spec, start, deadline, &abort] {
      run.sender_status = SendAll(run, spec, start, deadline, abort);
      if (!run.sender_status.ok()) abort = true;
      run.stop = true;
    });
  }
  for (auto& t : threads) t.join();

  // The client that failed first, rather than those that stopped for it.
  auto name = [&](size_t k) { return pairs.size() > 1 ? " " + std::to_string(k) : std::string(); };
  for (size_t k = 0; k < runs.size(); ++k) {
    if (!runs[k]->receiver_status.ok()) return runs[k]->receiver_status.WithContext("receiver" + name(k));
    if (!runs[k]->sender_status.ok() && !runs[k]->stopped_for_other) {
      return runs[k]->sender_status.WithContext("sender" + name(k));
    }
  }
  std::vector<int64_t> latency_ns;
  int64_t last_received_ns = 0;
  for (size_t k = 0; k < runs.size(); ++k) {
    const PairRun& run = *runs[k];
    const std::string pair = name(k);
    if (!run.sender_status.ok()) return run.sender_status.WithContext("sender" + pair);
    if (run.latency_ns.size() < spec.messages) {
      return Status::DeadlineExceeded("receiver" + pair + " got " + std::to_string(run.latency_ns.size()) + " of " +
                                      std::to_string(spec.messages) + " messages");
    }
    latency_ns.insert(latency_ns.end(), run.latency_ns.begin(), run.latency_ns.end());
    last_received_ns = std::max(last_received_ns, run.last_received_ns.load());
  }
  std::sort(latency_ns.begin(), latency_ns.end());
  LoadResult r;
  r.seconds = (last_received_ns - start_ns) / 1e9;
  r.throughput = static_cast<double>(latency_ns.size()) / r.seconds;
  r.p50_ms = Percentile(latency_ns, 0.50);
  r.p99_ms = Percentile(latency_ns, 0.99);
  r.p999_ms = Percentile(latency_ns, 0.999);
  return r;
}

StatusOr<LoadResult> RunLoad(SenderClient& sender, ReceiverClient& receiver, const LoadSpec& spec) {
  return RunLoad(std::vector<LoadPair>{{&sender, &receiver}}, spec);
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

StatusOr<ProcessUsage> ReadProcessUsage(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::ifstream status(proc + "/status");
  if (!status) return Status::NotFound("no process " + std::to_string(pid));
  ProcessUsage usage;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) usage.peak_rss_mib = std::stod(line.substr(6)) / 1024.0;  // kB
  }
  std::ifstream stat(proc + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command (which may hold spaces) start after the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return Status::Corruption("unreadable " + proc + "/stat");
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; fields >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stoull(field);
    if (i == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  usage.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return usage;
}

std::vector<uint8_t> NumberedBody(size_t size, uint64_t seq) {
  std::vector<uint8_t> body(std::max<size_t>(size, sizeof seq), 'x');
  std::memcpy(body.data(), &seq, sizeof seq);
  return body;
}

std::optional<uint64_t> BodyNumber(const void* data, size_t size) {
  if (size < sizeof(uint64_t)) return std::nullopt;
  uint64_t seq;
  std::memcpy(&seq, data, sizeof seq);
  return seq;
}

}  // namespace liaison::bench
