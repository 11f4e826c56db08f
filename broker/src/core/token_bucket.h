// A token bucket: the abuse limits' arithmetic (messages per agency in the
// core, HELLOs per connection in the transport).
#ifndef LIAISON_BROKER_CORE_TOKEN_BUCKET_H_
#define LIAISON_BROKER_CORE_TOKEN_BUCKET_H_

#include <algorithm>
#include <chrono>

namespace liaison::broker {

struct TokenBucket {
  double tokens = 0;
  std::chrono::steady_clock::time_point refilled{};

  // Refills at `per_second` up to `burst` (full on first use), then takes
  // one token if there is one. True if it took one.
  bool Take(double burst, double per_second, std::chrono::steady_clock::time_point now) {
    if (refilled == std::chrono::steady_clock::time_point{}) {
      tokens = burst;
    } else {
      const double seconds = std::chrono::duration<double>(now - refilled).count();
      tokens = std::min(burst, tokens + seconds * per_second);
    }
    refilled = now;
    if (tokens < 1) return false;
    tokens -= 1;
    return true;
  }
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_CORE_TOKEN_BUCKET_H_
