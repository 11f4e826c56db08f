// The baseline: the least a CURVE-secured ZeroMQ hop can do. A ROUTER socket
// takes each message from a sender and hands the same frame (zero-copy) to
// the one receiver; no parsing, no storage, no receipts, no ZAP handler (any
// client key is accepted). What liaison does on top is what the comparison
// prices.
#ifndef LIAISON_BENCH_FORWARDER_H_
#define LIAISON_BENCH_FORWARDER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "liaison/keys.h"
#include "load.h"

namespace liaison::bench {

// The forwarder process's main: serves on a free loopback port with the
// secret key in `secret_key_file`, writes "ENDPOINT\n" to `ready_file`, runs
// until SIGTERM. Returns the exit code.
int ForwarderMain(const std::string& secret_key_file, const std::string& ready_file);

// Starts ForwarderMain in a child process (this executable, re-run with
// "forwarder" arguments) and stops it on destruction.
class ForwarderProcess {
 public:
  // `dir`: an existing folder for the key and ready files.
  static StatusOr<std::unique_ptr<ForwarderProcess>> Start(const std::string& self_exe,
                                                           const std::string& dir);
  ~ForwarderProcess();
  void Stop();
  pid_t pid() const { return pid_; }
  const std::string& endpoint() const { return endpoint_; }
  const std::string& public_key() const { return keys_.public_z85; }

 private:
  ForwarderProcess() = default;
  pid_t pid_ = -1;
  std::string endpoint_;
  CurveKeyPair keys_;
};

// Clients over CURVE with fresh key pairs. The sender posts NumberedBody
// frames of `body_size` bytes (blocking while the queue is full: ZeroMQ's
// backpressure is the only confirmation the baseline has). The receiver
// introduces itself and waits (5 s) until the forwarder knows it.
StatusOr<std::unique_ptr<SenderClient>> ConnectForwarderSender(const ForwarderProcess& forwarder,
                                                               size_t body_size);
StatusOr<std::unique_ptr<ReceiverClient>> ConnectForwarderReceiver(const ForwarderProcess& forwarder);

}  // namespace liaison::bench

#endif  // LIAISON_BENCH_FORWARDER_H_
