// RabbitMQ for the comparison bench: a private broker (the Debian
// rabbitmq-server, stock durable settings) on loopback, and clients over
// librabbitmq that use it the way a careful application would: a durable
// queue, persistent messages, publisher confirms, manual consumer acks.
//
// Queues between runs: messages an earlier run left behind (one that failed
// half-way) must not cost the next run. RunLoad would skip them (they carry
// other numbers), but RabbitMQ would still deliver them. Either give each run
// a fresh queue name (a drained durable queue costs next to nothing), or
// reuse one name and call PurgeRabbitQueue before the run's receiver
// connects. Both clients declare the queue, so whichever connects first
// creates it; the receiver should connect first, since the default exchange
// drops (and still confirms) messages for a queue that does not exist yet.
#ifndef LIAISON_BENCH_RABBITMQ_PEER_H_
#define LIAISON_BENCH_RABBITMQ_PEER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "liaison/status.h"
#include "load.h"

namespace liaison::bench {

// One RabbitMQ node, isolated from any system RabbitMQ: its AMQP listener,
// Erlang distribution listener and its own epmd are on free 127.0.0.1 ports,
// its node name is unique, and nothing is read from /etc/rabbitmq or
// /var/lib/rabbitmq. The guest/guest user (loopback only) is the login.
class RabbitMqServer {
 public:
  // Starts the node and its epmd and waits (up to 60 s) until an AMQP login
  // succeeds. `work_dir` is an existing, empty folder the caller owns and
  // removes; the node keeps all its state there (config, data, logs, HOME
  // with the Erlang cookie). Fails if the server is not installed, exits
  // while starting or does not accept a login in time; the message names
  // the log to read. On failure nothing is left running.
  static StatusOr<std::unique_ptr<RabbitMqServer>> Start(const std::string& work_dir);
  // Stops the node if it runs.
  ~RabbitMqServer();
  RabbitMqServer(const RabbitMqServer&) = delete;
  RabbitMqServer& operator=(const RabbitMqServer&) = delete;

  // Stops the node (SIGTERM, which it takes as a clean shutdown; SIGKILL
  // after 10 s), the Erlang helper processes it started, and its epmd, and
  // waits until they are gone. Idempotent.
  void Stop();

  // The Erlang VM (beam.smp) that is the broker: its /proc figures are the
  // broker's memory and CPU.
  pid_t pid() const { return beam_pid_; }
  // The AMQP port on 127.0.0.1.
  int port() const { return amqp_port_; }
  // The node's main log.
  const std::string& log_path() const { return log_path_; }

 private:
  RabbitMqServer() = default;

  std::string work_dir_;
  std::string log_path_;     // the node's log (RABBITMQ_LOG_BASE/<node>.log)
  std::string stdout_path_;  // the start script's stdout and stderr
  std::string stderr_path_;
  int amqp_port_ = 0;
  pid_t epmd_pid_ = -1;    // our child, its own process group
  pid_t server_pid_ = -1;  // our child (the start script), leader of its process group
  pid_t beam_pid_ = -1;    // the start script's child
};

// A sender with its own connection and channel. Declares `queue` durable
// (not exclusive, not auto-delete) and turns on publisher confirms. Post
// publishes NumberedBody(body_size, seq) to the default exchange with the
// queue as routing key, persistent (delivery mode 2), not mandatory; it
// blocks while RabbitMQ pushes back through TCP. Confirmed counts basic.ack
// (a `multiple` ack confirms every tag up to its own); a basic.nack or a
// closed channel or connection is an error. Use from one thread.
StatusOr<std::unique_ptr<SenderClient>> ConnectRabbitSender(int port, const std::string& queue,
                                                            size_t body_size);

// A receiver with its own connection and channel. Declares `queue` as the
// sender does, sets basic.qos to `prefetch` unacknowledged messages and
// consumes with manual acks. Receive acks each message after reading its
// number (a body shorter than a number is a corruption error); a cancelled
// consumer or a closed channel or connection is an error. Messages it took
// but did not ack go back to the queue when it is destroyed. Use from one
// thread.
StatusOr<std::unique_ptr<ReceiverClient>> ConnectRabbitReceiver(int port, const std::string& queue,
                                                                uint16_t prefetch);

// Declares `queue` as the clients do (so a missing queue is not an error)
// and removes every message in it that no consumer holds. Call it between
// runs, with no receiver connected.
Status PurgeRabbitQueue(int port, const std::string& queue);

}  // namespace liaison::bench

#endif  // LIAISON_BENCH_RABBITMQ_PEER_H_
