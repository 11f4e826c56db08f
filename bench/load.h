// One load driver for every system the comparison bench measures (the CURVE
// forwarder, liaison, RabbitMQ): for each sender/receiver pair, a sender
// thread that posts numbered messages, paced or as fast as the system takes
// them, with at most `window` unconfirmed, and a receiver thread that takes
// and acknowledges them. The
// systems differ only in their clients, which implement the two interfaces
// below; the pacing, the clocks and the statistics are shared, so that the
// figures are comparable.
#ifndef LIAISON_BENCH_LOAD_H_
#define LIAISON_BENCH_LOAD_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "liaison/status.h"

namespace liaison::bench {

// The sending side of one system, used from one thread.
class SenderClient {
 public:
  virtual ~SenderClient() = default;
  // Sends message number `seq` (unique within the client's life) without
  // waiting for the system to confirm it. May block while the system
  // pushes back (a full transport queue). Failure ends the run.
  virtual Status Post(uint64_t seq) = 0;
  // Waits at most `wait` for confirmations (receipts, publisher acks) and
  // returns how many messages were newly confirmed (0 on timeout). A system
  // without confirmations returns every posted message as confirmed.
  // A refusal (a receipt that is not "stored", a nack) is an error.
  virtual StatusOr<uint64_t> Confirmed(std::chrono::milliseconds wait) = 0;
};

// The receiving side of one system, used from one thread.
class ReceiverClient {
 public:
  virtual ~ReceiverClient() = default;
  // Waits at most `wait` for the next message, acknowledges it to the
  // system (where it has acknowledgements) and returns its number; nullopt
  // on timeout.
  virtual StatusOr<std::optional<uint64_t>> Receive(std::chrono::milliseconds wait) = 0;
};

// Every figure in LoadSpec is per pair: with N pairs, N times as many
// messages are sent, at N times the rate, with N windows.
struct LoadSpec {
  uint64_t messages = 10000;
  // Pair k's numbers are first_seq + k * messages .. first_seq + (k + 1) * messages - 1.
  uint64_t first_seq = 0;
  double rate = 0;         // offered messages a second; 0 = as fast as accepted
  uint64_t window = 256;   // most messages posted and not yet confirmed
  std::chrono::seconds timeout{60};
};

struct LoadResult {
  double seconds = 0;      // first post to last receipt by any receiver
  double throughput = 0;   // messages a second over `seconds`, all pairs together
  // Per message, from its post (with a rate: from the moment it was due,
  // so that waiting to post counts) to its arrival at the receiver.
  double p50_ms = 0, p99_ms = 0, p999_ms = 0;
};

// One sender and the receiver its messages go to. Each client is used from
// one thread of RunLoad only.
struct LoadPair {
  SenderClient* sender;
  ReceiverClient* receiver;
};

// Runs one load over every pair at once, each sender and each receiver on a
// thread of its own, all started together. Latencies are pooled over the
// pairs. Fails if a client fails or not every message arrives in time
// (spec.timeout, for the whole run).
StatusOr<LoadResult> RunLoad(const std::vector<LoadPair>& pairs, const LoadSpec& spec);
// One pair.
StatusOr<LoadResult> RunLoad(SenderClient& sender, ReceiverClient& receiver, const LoadSpec& spec);

// The median of `values` (the middle one; the upper middle for an even
// count). `values` must not be empty.
double Median(std::vector<double> values);

// What a process has cost so far, from /proc/<pid>: peak resident set
// (VmHWM) and CPU time (user + system).
struct ProcessUsage {
  double peak_rss_mib = 0;
  double cpu_seconds = 0;
};
StatusOr<ProcessUsage> ReadProcessUsage(pid_t pid);

// A message body of `size` bytes carrying `seq` in its first 8 bytes (for the
// systems that carry opaque bytes: the forwarder and RabbitMQ).
std::vector<uint8_t> NumberedBody(size_t size, uint64_t seq);
// The number NumberedBody wrote; nullopt if `body` is shorter than 8 bytes.
std::optional<uint64_t> BodyNumber(const void* data, size_t size);

}  // namespace liaison::bench

#endif  // LIAISON_BENCH_LOAD_H_
