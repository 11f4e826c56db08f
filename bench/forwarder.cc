#include "forwarder.h"

#include <signal.h>

#include <atomic>
#include <fstream>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "integration/broker_process.h"

namespace liaison::bench {
namespace {

constexpr std::string_view kReceiverId = "receiver";
constexpr std::string_view kHello = "HELLO";

std::atomic<bool> g_stop{false};

void SetCurveClient(zmq::socket_t& socket, const std::string& server_public) {
  auto keys = GenerateCurveKeyPair();
  if (!keys.ok()) throw zmq::error_t();
  socket.set(zmq::sockopt::curve_serverkey, server_public);
  socket.set(zmq::sockopt::curve_publickey, keys->public_z85);
  socket.set(zmq::sockopt::curve_secretkey, keys->secret_z85);
}

class Sender : public SenderClient {
 public:
  Sender(const ForwarderProcess& f, size_t body_size)
      : body_size_(body_size), socket_(context_, zmq::socket_type::dealer) {
    SetCurveClient(socket_, f.public_key());
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(f.endpoint());
  }
  Status Post(uint64_t seq) override {
    std::vector<uint8_t> body = NumberedBody(body_size_, seq);
    try {
      socket_.send(zmq::buffer(body), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable(std::string("forwarder send: ") + e.what());
    }
    ++posted_;
    return Status::Ok();
  }
  StatusOr<uint64_t> Confirmed(std::chrono::milliseconds) override {
    const uint64_t n = posted_ - reported_;
    reported_ = posted_;
    return n;
  }

 private:
  size_t body_size_;
  uint64_t posted_ = 0, reported_ = 0;
  zmq::context_t context_;
  zmq::socket_t socket_;
};

class Receiver : public ReceiverClient {
 public:
  explicit Receiver(const ForwarderProcess& f) : socket_(context_, zmq::socket_type::dealer) {
    SetCurveClient(socket_, f.public_key());
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::routing_id, zmq::buffer(kReceiverId));
    socket_.connect(f.endpoint());
  }
  Status Introduce() {
    socket_.send(zmq::buffer(kHello), zmq::send_flags::none);
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(5000));
    zmq::message_t reply;
    if (!(item.revents & ZMQ_POLLIN) || !socket_.recv(reply, zmq::recv_flags::dontwait)) {
      return Status::DeadlineExceeded("the forwarder did not answer the receiver's hello");
    }
    return Status::Ok();
  }
  StatusOr<std::optional<uint64_t>> Receive(std::chrono::milliseconds wait) override {
    try {
      zmq::message_t m;
      if (!socket_.recv(m, zmq::recv_flags::dontwait)) {
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, wait);
        if (!socket_.recv(m, zmq::recv_flags::dontwait)) return std::optional<uint64_t>();
      }
      return BodyNumber(m.data(), m.size());
    } catch (const zmq::error_t& e) {
      return Status::Unavailable(std::string("forwarder receive: ") + e.what());
    }
  }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
};

}  // namespace

int ForwarderMain(const std::string& secret_key_file, const std::string& ready_file) {
  auto keys = LoadSecretKeyFile(secret_key_file);
  if (!keys.ok()) {
    std::fprintf(stderr, "forwarder: %s\n", keys.status().ToString().c_str());
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = true; };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::curve_server, 1);
  router.set(zmq::sockopt::curve_secretkey, keys->secret_z85);
  // Block (backpressure) instead of dropping when the receiver is slow, and
  // fail instead of dropping when it is not there.
  router.set(zmq::sockopt::router_mandatory, 1);
  router.set(zmq::sockopt::linger, 0);
  // SIGTERM may land on one of libzmq's threads and not interrupt recv():
  // wake up now and then to look at the flag.
  router.set(zmq::sockopt::rcvtimeo, 100);
  router.bind("tcp://127.0.0.1:*");
  {
    std::ofstream ready(ready_file + ".tmp");
    ready << router.get(zmq::sockopt::last_endpoint) << "\n";
  }
  std::rename((ready_file + ".tmp").c_str(), ready_file.c_str());
  const zmq::const_buffer receiver = zmq::buffer(kReceiverId);
  while (!g_stop) {
    zmq::message_t from, body;
    try {
      if (!router.recv(from) || !router.recv(body)) continue;
      if (from.to_string_view() == kReceiverId) {
        router.send(zmq::buffer(kReceiverId), zmq::send_flags::sndmore);
        router.send(zmq::buffer(kHello), zmq::send_flags::none);
        continue;
      }
      router.send(receiver, zmq::send_flags::sndmore);
      router.send(body, zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      if (e.num() == EHOSTUNREACH) continue;  // no receiver yet: the message is dropped
      std::fprintf(stderr, "forwarder: %s\n", e.what());
      return 1;
    }
  }
  return 0;
}

StatusOr<std::unique_ptr<ForwarderProcess>> ForwarderProcess::Start(const std::string& self_exe,
                                                                    const std::string& dir) {
  std::unique_ptr<ForwarderProcess> f(new ForwarderProcess());
  auto keys = GenerateCurveKeyPair();
  if (!keys.ok()) return keys.status();
  f->keys_ = *keys;
  LIAISON_RETURN_IF_ERROR(WriteCurveKeyPair(dir, "forwarder", f->keys_));
  const std::string ready = dir + "/forwarder.endpoint";
  f->pid_ = testing::Spawn({self_exe, "forwarder", dir + "/forwarder.key", ready}, -1, -1);
  LIAISON_RETURN_IF_ERROR(testing::WaitForReadyFile(
      &f->pid_, ready, "forwarder", [] { return std::string("see its standard error"); }, &f->endpoint_));
  return f;
}

ForwarderProcess::~ForwarderProcess() { Stop(); }

void ForwarderProcess::Stop() { testing::StopProcess(&pid_, SIGTERM); }

StatusOr<std::unique_ptr<SenderClient>> ConnectForwarderSender(const ForwarderProcess& forwarder,
                                                               size_t body_size) {
  try {
    return std::unique_ptr<SenderClient>(new Sender(forwarder, body_size));
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("forwarder sender: ") + e.what());
  }
}

StatusOr<std::unique_ptr<ReceiverClient>> ConnectForwarderReceiver(const ForwarderProcess& forwarder) {
  try {
    auto receiver = std::make_unique<Receiver>(forwarder);
    LIAISON_RETURN_IF_ERROR(receiver->Introduce());
    return std::unique_ptr<ReceiverClient>(std::move(receiver));
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("forwarder receiver: ") + e.what());
  }
}

}  // namespace liaison::bench
