// The gateway's open HTTPS connections, and whom to shed when there are too
// many. A connection is unauthenticated from accept until it has shown the
// agency's credential (a request with the bearer token, or the verified
// client certificate when that alone is required). Idle, half-open and
// slow-header connections all stay unauthenticated, so they are the ones
// shed, oldest first: a flood of them cannot lock out the agency's system,
// whose fresh connection is the newest and authenticates within one round
// trip. Authenticated connections are never shed; when all of the cap is
// authenticated, a new connection is refused.
//
// Not thread-safe: the HTTPS server's I/O thread owns it.
#ifndef LIAISON_AGENTS_GATEWAY_CONNECTION_TABLE_H_
#define LIAISON_AGENTS_GATEWAY_CONNECTION_TABLE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace liaison::gateway {

class ConnectionTable {
 public:
  ConnectionTable(uint64_t max_connections, uint64_t max_unauthenticated_per_address)
      : max_connections_(max_connections), max_per_address_(max_unauthenticated_per_address) {}

  // Makes room for a new connection from `address` by shedding (calling
  // `close` of) the oldest unauthenticated connection from the same address
  // when that address is at its limit, then the oldest unauthenticated one
  // of all when the table is full. Returns the new connection's id, or 0
  // when no room can be made (refuse it). `close` must end the connection's
  // I/O (its owner then calls Remove).
  uint64_t Admit(const std::string& address, std::function<void()> close);
  // The connection showed the agency's credential: never shed from now on.
  void Authenticate(uint64_t id);
  bool authenticated(uint64_t id) const;
  // The connection was shed (its close was called): its errors are expected.
  bool shed(uint64_t id) const;
  void Remove(uint64_t id);

  uint64_t open() const { return open_; }  // not counting shed ones
  uint64_t shed_total() const { return shed_total_; }

 private:
  struct Entry {
    std::string address;
    bool authenticated = false;
    bool shed = false;
    std::function<void()> close;
  };
  // Sheds the oldest unauthenticated connection (from `address`, if not
  // empty); false if there is none.
  bool ShedOldest(const std::string& address);

  const uint64_t max_connections_;
  const uint64_t max_per_address_;
  uint64_t next_id_ = 1;
  uint64_t open_ = 0;
  uint64_t shed_total_ = 0;
  std::map<uint64_t, Entry> entries_;  // by id: oldest first
  std::map<std::string, uint64_t> unauthenticated_;  // open ones, per address
};

}  // namespace liaison::gateway

#endif  // LIAISON_AGENTS_GATEWAY_CONNECTION_TABLE_H_
