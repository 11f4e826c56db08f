// How the message core reaches agencies' connections. The transport (the
// ROUTER socket, CURVE, ZAP) implements it; the core never sees a socket.
// Every call is made on the core's thread, which is the transport's.
#ifndef LIAISON_BROKER_CORE_LINK_H_
#define LIAISON_BROKER_CORE_LINK_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace liaison::broker {

class Link {
 public:
  enum class SendResult {
    kSent,  // handed to the connection's queue
    kFull,  // the connection's queue is full: nothing was sent, try later
    kGone,  // no such connection (any more): nothing was sent
  };

  virtual ~Link() = default;

  // Sends [routing_id, command, body] without blocking.
  virtual SendResult SendTo(const std::string& routing_id, std::string_view command, const void* data,
                            size_t size) = 0;
  // The routing id of `agency`'s newest receiver connection, after dropping
  // those whose key a reload revoked or whose broker key retired; nullptr if
  // none is left. Valid until the next call into the link.
  virtual const std::string* LiveReceiverOf(const std::string& agency) = 0;
  // True if `agency` has a receiver connection (revoked or not: cheap).
  virtual bool HasReceiver(const std::string& agency) const = 0;
  // Forgets `agency`'s newest receiver connection: a send found it gone.
  virtual void DropReceiver(const std::string& agency) = 0;
  // The agencies that have a receiver connection.
  virtual std::vector<std::string> ReceiverAgencies() const = 0;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_CORE_LINK_H_
