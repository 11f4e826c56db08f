#include "connection_table.h"

namespace liaison::gateway {

uint64_t ConnectionTable::Admit(const std::string& address, std::function<void()> close) {
  auto it = unauthenticated_.find(address);
  if (it != unauthenticated_.end() && it->second >= max_per_address_) ShedOldest(address);
  if (open_ >= max_connections_ && !ShedOldest("")) return 0;
  const uint64_t id = next_id_++;
  entries_.emplace(id, Entry{address, false, false, std::move(close)});
  ++open_;
  ++unauthenticated_[address];
  return id;
}

bool ConnectionTable::ShedOldest(const std::string& address) {
  for (auto& [id, entry] : entries_) {
    if (entry.authenticated || entry.shed || (!address.empty() && entry.address != address)) continue;
    entry.shed = true;
    --open_;
    if (--unauthenticated_[entry.address] == 0) unauthenticated_.erase(entry.address);
    ++shed_total_;
    // Last: close may run the owner's code, which must see the entry shed.
    entry.close();
    return true;
  }
  return false;
}

void ConnectionTable::Authenticate(uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.authenticated || it->second.shed) return;
  it->second.authenticated = true;
  if (--unauthenticated_[it->second.address] == 0) unauthenticated_.erase(it->second.address);
}

bool ConnectionTable::authenticated(uint64_t id) const {
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.authenticated;
}

bool ConnectionTable::shed(uint64_t id) const {
  auto it = entries_.find(id);
  return it != entries_.end() && it->second.shed;
}

void ConnectionTable::Remove(uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  if (!it->second.shed) {
    --open_;
    if (!it->second.authenticated && --unauthenticated_[it->second.address] == 0) {
      unauthenticated_.erase(it->second.address);
    }
  }
  entries_.erase(it);
}

}  // namespace liaison::gateway
