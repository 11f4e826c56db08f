#include "core/receipt_filter.h"

#include <algorithm>
#include <bit>
#include <functional>

namespace liaison::broker {
namespace {

// 10 to 20 bits (a power of two of them for the generation) and 7 probes a
// key: a false "maybe" for at most 0.8% of the keys never added, a
// generation, while it holds at most its capacity.
constexpr size_t kBitsPerKey = 10;
constexpr int kProbes = 7;

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

ReceiptFilter::ReceiptFilter(size_t first_capacity)
    : next_capacity_(std::clamp<size_t>(first_capacity, 64, kMaxCapacity)) {}

void ReceiptFilter::Hash(std::string_view sender, std::string_view message_id, uint64_t* h1, uint64_t* h2) {
  // Ids are unique per sender only: the sender is part of the key. A
  // crafted id can only make a false "maybe" (a store read), never a false
  // "no", so an unkeyed hash will do.
  const uint64_t s = std::hash<std::string_view>{}(sender);
  const uint64_t m = std::hash<std::string_view>{}(message_id);
  *h1 = Mix(s * 0x9e3779b97f4a7c15ULL + m);
  *h2 = Mix(*h1 ^ 0x6a09e667f3bcc909ULL) | 1;  // odd: the probes visit distinct bits
}

uint64_t ReceiptFilter::Probe(const Generation& g, uint64_t h1, uint64_t h2, int i) {
  return (h1 + static_cast<uint64_t>(i) * h2) & (g.bits.size() * 64 - 1);
}

bool ReceiptFilter::Test(const Generation& g, uint64_t h1, uint64_t h2) {
  for (int i = 0; i < kProbes; ++i) {
    const uint64_t bit = Probe(g, h1, h2, i);
    if ((g.bits[bit >> 6] & (uint64_t{1} << (bit & 63))) == 0) return false;
  }
  return true;
}

void ReceiptFilter::Open(size_t capacity) {
  Generation g;
  g.id = next_id_++;
  g.capacity = capacity;
  g.bits.assign(std::bit_ceil(capacity * kBitsPerKey) / 64, 0);
  generations_.push_back(std::move(g));
  next_capacity_ = std::min(capacity * 2, kMaxCapacity);
}

void ReceiptFilter::Add(std::string_view sender, std::string_view message_id, int64_t purge_after_ms) {
  if (generations_.empty() || generations_.back().sealed || generations_.back().keys >= generations_.back().capacity) {
    Open(next_capacity_);
  }
  uint64_t h1, h2;
  Hash(sender, message_id, &h1, &h2);
  Generation& g = generations_.back();
  for (int i = 0; i < kProbes; ++i) {
    const uint64_t bit = Probe(g, h1, h2, i);
    g.bits[bit >> 6] |= uint64_t{1} << (bit & 63);
  }
  g.keys++;
  g.last_purge_after_ms = std::max(g.last_purge_after_ms, purge_after_ms);
}

bool ReceiptFilter::MayContain(std::string_view sender, std::string_view message_id) const {
  uint64_t h1, h2;
  Hash(sender, message_id, &h1, &h2);
  // Newest first: a resend is usually of a recent message.
  for (auto g = generations_.rbegin(); g != generations_.rend(); ++g) {
    if (Test(*g, h1, h2)) return true;
  }
  return false;
}

uint64_t ReceiptFilter::Seal(int64_t cut_off_ms) {
  if (generations_.empty()) return next_id_ - 1;
  Generation& newest = generations_.back();
  if (newest.last_purge_after_ms > cut_off_ms) return newest.id - 1;
  // Rare: the broker took no message for as long as the retention.
  newest.sealed = true;
  return newest.id;
}

void ReceiptFilter::Forget(int64_t cut_off_ms, uint64_t sealed) {
  std::erase_if(generations_,
                [&](const Generation& g) { return g.id <= sealed && g.last_purge_after_ms <= cut_off_ms; });
}

size_t ReceiptFilter::keys() const {
  size_t n = 0;
  for (const Generation& g : generations_) n += g.keys;
  return n;
}

size_t ReceiptFilter::bytes() const {
  size_t n = 0;
  for (const Generation& g : generations_) n += g.bits.size() * sizeof(uint64_t);
  return n;
}

}  // namespace liaison::broker
