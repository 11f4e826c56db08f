#include "load.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
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

}  // namespace

StatusOr<LoadResult> RunLoad(SenderClient& sender, ReceiverClient& receiver, const LoadSpec& spec) {
  // Post times by message number; the receiver reads a slot only after the
  // message came back through the system, which the sender posted after
  // writing the slot, but the two threads share no lock: hence atomics.
  std::vector<std::atomic<int64_t>> posted(spec.messages);
  std::vector<int64_t> latency_ns;
  latency_ns.reserve(spec.messages);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> last_received_ns{0};
  std::atomic<uint64_t> received_count{0};
  std::atomic<bool> receiver_failed{false};
  Status receiver_status = Status::Ok();

  std::thread receiving([&] {
    uint64_t received = 0;
    while (received < spec.messages && !stop) {
      auto got = receiver.Receive(std::chrono::milliseconds(100));
      if (!got.ok()) {
        receiver_status = got.status();
        receiver_failed = true;
        return;
      }
      if (!got->has_value()) continue;
      const uint64_t seq = **got;
      const int64_t now = NowNs();
      if (seq < spec.first_seq || seq >= spec.first_seq + spec.messages) continue;  // an old run's
      const int64_t sent = posted[seq - spec.first_seq].load(std::memory_order_acquire);
      if (sent == 0) continue;  // a redelivery of one already counted
      posted[seq - spec.first_seq].store(0, std::memory_order_relaxed);
      latency_ns.push_back(now - sent);
      ++received;
      last_received_ns.store(now, std::memory_order_release);
      received_count.store(received, std::memory_order_release);
    }
  });

  const auto deadline = Clock::now() + spec.timeout;
  const int64_t start_ns = NowNs();
  const auto interval = spec.rate > 0 ? std::chrono::nanoseconds(static_cast<int64_t>(1e9 / spec.rate))
                                      : std::chrono::nanoseconds(0);
  auto next = Clock::now();
  uint64_t confirmed = 0;
  Status sender_status = Status::Ok();
  for (uint64_t i = 0; i < spec.messages && sender_status.ok(); ++i) {
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
      if (Clock::now() > deadline) {
        sender_status = Status::DeadlineExceeded("confirmations stopped coming");
        break;
      }
      auto n = sender.Confirmed(std::chrono::milliseconds(100));
      if (!n.ok()) {
        sender_status = n.status();
        break;
      }
      confirmed += *n;
    }
    if (!sender_status.ok()) break;
    posted[i].store(due_ns != 0 ? due_ns : NowNs(), std::memory_order_release);
    sender_status = sender.Post(spec.first_seq + i);
    if (!sender_status.ok()) break;
    auto n = sender.Confirmed(std::chrono::milliseconds(0));
    if (!n.ok()) sender_status = n.status();
    else confirmed += *n;
  }
  while (sender_status.ok() && confirmed < spec.messages) {
    if (Clock::now() > deadline) {
      sender_status = Status::DeadlineExceeded("not every message was confirmed in time");
      break;
    }
    auto n = sender.Confirmed(std::chrono::milliseconds(100));
    if (!n.ok()) sender_status = n.status();
    else confirmed += *n;
  }
  while (sender_status.ok() && !receiver_failed && received_count < spec.messages) {
    if (Clock::now() > deadline) {
      sender_status = Status::DeadlineExceeded("not every message was received in time");
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  receiving.join();
  if (!sender_status.ok()) return sender_status.WithContext("sender");
  if (!receiver_status.ok()) return receiver_status.WithContext("receiver");
  if (latency_ns.size() < spec.messages) {
    return Status::DeadlineExceeded("received " + std::to_string(latency_ns.size()) + " of " +
                                    std::to_string(spec.messages) + " messages");
  }
  std::sort(latency_ns.begin(), latency_ns.end());
  LoadResult r;
  r.seconds = (last_received_ns.load() - start_ns) / 1e9;
  r.throughput = spec.messages / r.seconds;
  r.p50_ms = Percentile(latency_ns, 0.50);
  r.p99_ms = Percentile(latency_ns, 0.99);
  r.p999_ms = Percentile(latency_ns, 0.999);
  return r;
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
