#include "rabbitmq_peer.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

// librabbitmq moved its headers under rabbitmq-c/ in 0.12; Debian 12 ships
// 0.11 with them at the top level.
#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

namespace liaison::bench {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// The Debian package's start script (not /usr/sbin/rabbitmq-server, which
// switches to the rabbitmq user with su and writes to /var/log/rabbitmq).
constexpr char kServerScript[] = "/usr/lib/rabbitmq/bin/rabbitmq-server";
constexpr char kLoopback[] = "127.0.0.1";
// The guest user may log in over loopback only, which is all we use.
constexpr char kUser[] = "guest";
constexpr char kPassword[] = "guest";
constexpr amqp_channel_t kChannel = 1;
constexpr seconds kStartTimeout{60};
// A clean RabbitMQ shutdown takes about a second; a stuck one gets SIGKILL.
constexpr seconds kStopGrace{10};
// Bounds every synchronous AMQP method (declare, qos, close), so that a
// broker that stopped answering fails the call instead of hanging the bench.
constexpr seconds kRpcTimeout{30};
constexpr seconds kConnectTimeout{5};

Status ErrnoStatus(const std::string& what) {
  return Status::IoError(what + ": " + std::strerror(errno));
}

timeval ToTimeval(milliseconds ms) {
  if (ms.count() < 0) ms = milliseconds(0);
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

milliseconds Remaining(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? left : milliseconds(0);
}

// ---- Files, ports and processes -----------------------------------------

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return ErrnoStatus("cannot write " + path);
  return Status::Ok();
}

Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus("cannot create " + path);
  return Status::Ok();
}

// The last `lines` non-empty lines of a file, joined with " | "; empty if
// the file is missing or empty.
std::string TailOf(const std::string& path, size_t lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > 16384 ? size - 16384 : 0;
  in.seekg(from);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> all;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) all.push_back(line);
  }
  std::string tail;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    if (!tail.empty()) tail += " | ";
    tail += all[i];
  }
  return tail;
}

// Free TCP ports on 127.0.0.1, as the kernel hands them out for port 0. The
// sockets stay open until all are chosen, so the ports differ; another
// process may still take one before the server binds it (then it fails to
// start and says so).
StatusOr<std::vector<int>> FreeLoopbackPorts(size_t count) {
  std::vector<int> fds;
  std::vector<int> ports;
  Status status = Status::Ok();
  for (size_t i = 0; i < count && status.ok(); ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      status = ErrnoStatus("socket");
      break;
    }
    fds.push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    inet_pton(AF_INET, kLoopback, &addr.sin_addr);
    socklen_t len = sizeof addr;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      status = ErrnoStatus("cannot pick a free port on 127.0.0.1");
      break;
    }
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) close(fd);
  if (!status.ok()) return status;
  return ports;
}

bool TcpConnects(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, kLoopback, &addr.sin_addr);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// What /proc/<pid>/stat says about a process.
struct ProcStat {
  pid_t pid = -1;
  pid_t ppid = -1;
  pid_t pgrp = -1;
  char state = '?';
  unsigned long long start_time = 0;  // since boot, in clock ticks: tells a reused pid apart
  std::string comm;
};

std::optional<ProcStat> ReadProcStat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command is in parentheses and may itself hold spaces and ')'.
  const size_t open = text.find('(');
  const size_t close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcStat stat;
  stat.pid = pid;
  stat.comm = text.substr(open + 1, close - open - 1);
  std::istringstream fields(text.substr(close + 1));
  std::string field;
  for (int i = 3; fields >> field; ++i) {  // field 3 is the state
    if (i == 3) stat.state = field[0];
    if (i == 4) stat.ppid = static_cast<pid_t>(std::stol(field));
    if (i == 5) stat.pgrp = static_cast<pid_t>(std::stol(field));
    if (i == 22) {
      stat.start_time = std::stoull(field);
      return stat;
    }
  }
  return std::nullopt;
}

std::vector<ProcStat> AllProcesses() {
  std::vector<ProcStat> all;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return all;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    if (auto stat = ReadProcStat(static_cast<pid_t>(pid))) all.push_back(*stat);
  }
  closedir(dir);
  return all;
}

// Every process below `root` (not `root` itself).
std::vector<ProcStat> Descendants(pid_t root) {
  std::multimap<pid_t, ProcStat> by_parent;
  for (const ProcStat& p : AllProcesses()) by_parent.emplace(p.ppid, p);
  std::vector<ProcStat> found;
  std::vector<pid_t> todo{root};
  while (!todo.empty()) {
    const pid_t parent = todo.back();
    todo.pop_back();
    auto [begin, end] = by_parent.equal_range(parent);
    for (auto it = begin; it != end; ++it) {
      found.push_back(it->second);
      todo.push_back(it->second.pid);
    }
  }
  return found;
}

// True while the process noted in `p` runs (a zombie has finished; a pid
// with another start time is another process).
bool StillRuns(const ProcStat& p) {
  const auto now = ReadProcStat(p.pid);
  return now && now->start_time == p.start_time && now->state != 'Z' && now->state != 'X';
}

// Reaps our child `pid` once it has exited; false if it still runs after
// `timeout`. A child someone else reaped (ECHILD) counts as exited.
bool WaitExit(pid_t pid, milliseconds timeout, int* status = nullptr) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int st = 0;
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      if (status != nullptr) *status = st;
      return true;
    }
    if (r < 0 && errno != EINTR) return true;  // ECHILD: not ours (any more)
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
}

std::string ExitText(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Starts `argv` (argv[0] looked up in this process's PATH) with exactly
// `env`, in a new process group of its own, in `cwd`, stdin from /dev/null,
// stdout and stderr appended to the given files, signals at their defaults
// (the bench may ignore SIGPIPE or block signals in its own threads).
StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                      const std::string& cwd, const std::string& out_path, const std::string& err_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigdefault(&attr, &defaults);

  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Status::IoError("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

// ---- AMQP ----------------------------------------------------------------

std::string BytesText(amqp_bytes_t bytes) {
  return std::string(static_cast<const char*>(bytes.bytes), bytes.len);
}

Status AmqpStatus(int status, const std::string& what) {
  const std::string msg = what + ": " + amqp_error_string2(status);
  if (status == AMQP_STATUS_TIMEOUT) return Status::DeadlineExceeded(msg);
  return Status::Unavailable(msg);
}

// A channel.close or connection.close from the server, as a Status.
Status ClosedStatus(const amqp_method_t& method, const std::string& what) {
  uint16_t code = 0;
  std::string text, whom;
  if (method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* close = static_cast<const amqp_connection_close_t*>(method.decoded);
    code = close->reply_code;
    text = BytesText(close->reply_text);
    whom = "connection";
  } else if (method.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* close = static_cast<const amqp_channel_close_t*>(method.decoded);
    code = close->reply_code;
    text = BytesText(close->reply_text);
    whom = "channel";
  } else {
    return Status::Internal(what + ": unexpected AMQP method " + amqp_method_name(method.id));
  }
  const std::string msg = what + ": RabbitMQ closed the " + whom + " (" + std::to_string(code) + " " + text + ")";
  switch (code) {
    case AMQP_ACCESS_REFUSED: return Status::PermissionDenied(msg);
    case AMQP_NOT_FOUND: return Status::NotFound(msg);
    case AMQP_PRECONDITION_FAILED: return Status::InvalidArgument(msg);
    default: return Status::Unavailable(msg);
  }
}

Status RpcStatus(const amqp_rpc_reply_t& reply, const std::string& what) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL: return Status::Ok();
    case AMQP_RESPONSE_NONE: return Status::Internal(what + ": librabbitmq gave no reply");
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: return AmqpStatus(reply.library_error, what);
    case AMQP_RESPONSE_SERVER_EXCEPTION: return ClosedStatus(reply.reply, what);
  }
  return Status::Internal(what + ": unknown librabbitmq reply type");
}

// One logged-in connection with channel kChannel open. Not thread-safe (nor
// is librabbitmq's connection state): one thread uses it.
class AmqpConnection {
 public:
  // Connects to 127.0.0.1:`port` as guest within `timeout` (per step).
  static StatusOr<std::unique_ptr<AmqpConnection>> Open(int port, milliseconds timeout) {
    std::unique_ptr<AmqpConnection> c(new AmqpConnection());
    const std::string where = "RabbitMQ at 127.0.0.1:" + std::to_string(port);
    c->state_ = amqp_new_connection();
    if (c->state_ == nullptr) return Status::Internal("amqp_new_connection failed (out of memory?)");
    amqp_socket_t* socket = amqp_tcp_socket_new(c->state_);  // owned by the connection
    if (socket == nullptr) return Status::Internal("amqp_tcp_socket_new failed (out of memory?)");
    timeval tv = ToTimeval(timeout);
    const int rc = amqp_socket_open_noblock(socket, kLoopback, port, &tv);
    if (rc != AMQP_STATUS_OK) return AmqpStatus(rc, "cannot connect to " + where);
    amqp_set_handshake_timeout(c->state_, &tv);
    timeval rpc = ToTimeval(kRpcTimeout);
    amqp_set_rpc_timeout(c->state_, &rpc);
    // No heartbeats: the connections live for one run on loopback, and a
    // receiver that waits long between messages must not be dropped.
    const amqp_rpc_reply_t login = amqp_login(c->state_, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0,
                                              AMQP_SASL_METHOD_PLAIN, kUser, kPassword);
    if (login.reply_type != AMQP_RESPONSE_NORMAL) {
      c->healthy_ = false;
      return RpcStatus(login, "cannot log in to " + where + " as " + kUser);
    }
    c->logged_in_ = true;
    amqp_channel_open(c->state_, kChannel);
    LIAISON_RETURN_IF_ERROR(c->Check("cannot open a channel to " + where));
    c->channel_open_ = true;
    return c;
  }

  ~AmqpConnection() {
    if (state_ == nullptr) return;
    if (healthy_) {
      // Polite closes, so that RabbitMQ logs no "client unexpectedly closed
      // TCP connection"; a broken connection is just dropped.
      if (channel_open_) amqp_channel_close(state_, kChannel, AMQP_REPLY_SUCCESS);
      if (logged_in_) amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(state_);
  }

  amqp_connection_state_t state() const { return state_; }

  // The outcome of the last synchronous method. After an error the channel
  // or connection is closed or its state unknown: no polite close then.
  Status Check(const std::string& what) {
    Status status = RpcStatus(amqp_get_rpc_reply(state_), what);
    if (!status.ok()) healthy_ = false;
    return status;
  }

  // After an error: drop the connection without the close handshake.
  void MarkBroken() { healthy_ = false; }

  // Durable, not exclusive, not auto-delete: the queue a durable
  // application would use, surviving a broker restart.
  Status DeclareQueue(const std::string& queue) {
    amqp_queue_declare(state_, kChannel, amqp_cstring_bytes(queue.c_str()), /*passive=*/0,
                       /*durable=*/1, /*exclusive=*/0, /*auto_delete=*/0, amqp_empty_table);
    return Check("cannot declare queue '" + queue + "'");
  }

 private:
  AmqpConnection() = default;

  amqp_connection_state_t state_ = nullptr;
  bool logged_in_ = false;
  bool channel_open_ = false;
  bool healthy_ = true;
};

class RabbitSender final : public SenderClient {
 public:
  RabbitSender(std::unique_ptr<AmqpConnection> conn, std::string queue, size_t body_size)
      : conn_(std::move(conn)), queue_(std::move(queue)), body_size_(body_size) {
    std::memset(&props_, 0, sizeof props_);
    props_._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    props_.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  }

  Status Post(uint64_t seq) override {
    if (!failed_.ok()) return failed_;
    std::vector<uint8_t> body = NumberedBody(body_size_, seq);
    amqp_bytes_t bytes;
    bytes.len = body.size();
    bytes.bytes = body.data();
    const int rc = amqp_basic_publish(conn_->state(), kChannel, amqp_empty_bytes,
                                      amqp_cstring_bytes(queue_.c_str()), /*mandatory=*/0,
                                      /*immediate=*/0, &props_, bytes);
    if (rc != AMQP_STATUS_OK) return Fail(AmqpStatus(rc, "cannot publish message " + std::to_string(seq)));
    ++published_;  // with confirms on, the channel numbers publishes 1, 2, ...
    return Status::Ok();
  }

  StatusOr<uint64_t> Confirmed(milliseconds wait) override {
    if (!failed_.ok()) return failed_;
    amqp_connection_state_t state = conn_->state();
    // Frames decode into the connection's pools; free what earlier calls
    // left (a no-op while frames are still queued).
    amqp_maybe_release_buffers(state);
    const auto deadline = Clock::now() + wait;
    uint64_t newly = 0;
    for (;;) {
      // Wait for the first confirmation, then take only what has arrived.
      timeval tv = ToTimeval(newly > 0 ? milliseconds(0) : Remaining(deadline));
      amqp_frame_t frame;
      const int rc = amqp_simple_wait_frame_noblock(state, &frame, &tv);
      if (rc == AMQP_STATUS_TIMEOUT) return newly;
      if (rc != AMQP_STATUS_OK) return Fail(AmqpStatus(rc, "waiting for publisher confirms"));
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      const amqp_method_t& method = frame.payload.method;
      switch (method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          const auto* ack = static_cast<const amqp_basic_ack_t*>(method.decoded);
          newly += Acknowledge(ack->delivery_tag, ack->multiple != 0);
          break;
        }
        case AMQP_BASIC_NACK_METHOD: {
          const auto* nack = static_cast<const amqp_basic_nack_t*>(method.decoded);
          return Fail(Status::Unavailable("RabbitMQ refused (basic.nack) publish " +
                                          std::to_string(nack->delivery_tag) +
                                          (nack->multiple ? " and those before it" : "")));
        }
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD:
          return Fail(ClosedStatus(method, "waiting for publisher confirms"));
        default:
          // connection.blocked/unblocked (a resource alarm: publishes stall
          // through TCP and the run times out) and anything else: nothing
          // to count.
          break;
      }
    }
  }

 private:
  // Counts the publishes an ack newly confirms. RabbitMQ may confirm out of
  // order and with `multiple` covering earlier single acks; each publish is
  // counted once.
  uint64_t Acknowledge(uint64_t tag, bool multiple) {
    if (tag > published_) tag = published_;  // never count what was not published
    uint64_t newly = 0;
    if (multiple) {
      if (tag <= confirmed_through_) return 0;
      auto end = confirmed_above_.upper_bound(tag);
      newly = (tag - confirmed_through_) - static_cast<uint64_t>(std::distance(confirmed_above_.begin(), end));
      confirmed_above_.erase(confirmed_above_.begin(), end);
      confirmed_through_ = tag;
    } else {
      if (tag <= confirmed_through_ || !confirmed_above_.insert(tag).second) return 0;
      newly = 1;
    }
    while (!confirmed_above_.empty() && *confirmed_above_.begin() == confirmed_through_ + 1) {
      confirmed_above_.erase(confirmed_above_.begin());
      ++confirmed_through_;
    }
    return newly;
  }

  Status Fail(Status status) {
    conn_->MarkBroken();
    failed_ = status;
    return status;
  }

  std::unique_ptr<AmqpConnection> conn_;
  const std::string queue_;
  const size_t body_size_;
  amqp_basic_properties_t props_;
  uint64_t published_ = 0;               // the last delivery tag used
  uint64_t confirmed_through_ = 0;       // every tag up to this one is confirmed
  std::set<uint64_t> confirmed_above_;   // single acks beyond confirmed_through_
  Status failed_;                        // the first error; the connection is done
};

class RabbitReceiver final : public ReceiverClient {
 public:
  explicit RabbitReceiver(std::unique_ptr<AmqpConnection> conn) : conn_(std::move(conn)) {}

  StatusOr<std::optional<uint64_t>> Receive(milliseconds wait) override {
    if (!failed_.ok()) return failed_;
    amqp_connection_state_t state = conn_->state();
    const auto deadline = Clock::now() + wait;
    for (;;) {
      amqp_maybe_release_buffers(state);
      timeval tv = ToTimeval(Remaining(deadline));
      amqp_envelope_t envelope;
      // Only the wait for the delivery's first frame is bounded; the rest
      // of a message follows it at once.
      const amqp_rpc_reply_t reply = amqp_consume_message(state, &envelope, &tv, 0);
      if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
        const std::optional<uint64_t> seq = BodyNumber(envelope.message.body.bytes, envelope.message.body.len);
        const size_t size = envelope.message.body.len;
        const uint64_t tag = envelope.delivery_tag;
        amqp_destroy_envelope(&envelope);
        if (!seq) {
          return Fail(Status::Corruption("RabbitMQ delivered a message of " + std::to_string(size) +
                                         " bytes, too short to hold a message number"));
        }
        const int rc = amqp_basic_ack(state, kChannel, tag, /*multiple=*/0);
        if (rc != AMQP_STATUS_OK) return Fail(AmqpStatus(rc, "cannot acknowledge message " + std::to_string(*seq)));
        return std::optional<uint64_t>(*seq);
      }
      if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_TIMEOUT) {
        return std::optional<uint64_t>();
      }
      if (reply.reply_type != AMQP_RESPONSE_LIBRARY_EXCEPTION ||
          reply.library_error != AMQP_STATUS_UNEXPECTED_STATE) {
        return Fail(RpcStatus(reply, "receiving from RabbitMQ"));
      }
      // Something other than a delivery; librabbitmq put it back for us.
      amqp_frame_t frame;
      const int rc = amqp_simple_wait_frame(state, &frame);
      if (rc != AMQP_STATUS_OK) return Fail(AmqpStatus(rc, "receiving from RabbitMQ"));
      if (frame.frame_type == AMQP_FRAME_METHOD) {
        switch (frame.payload.method.id) {
          case AMQP_CHANNEL_CLOSE_METHOD:
          case AMQP_CONNECTION_CLOSE_METHOD:
            return Fail(ClosedStatus(frame.payload.method, "receiving from RabbitMQ"));
          case AMQP_BASIC_CANCEL_METHOD:
            return Fail(Status::Unavailable("RabbitMQ cancelled the consumer (was the queue deleted?)"));
          default:
            break;  // nothing a consumer needs
        }
      }
      if (Clock::now() >= deadline) return std::optional<uint64_t>();
    }
  }

 private:
  Status Fail(Status status) {
    conn_->MarkBroken();
    failed_ = status;
    return status;
  }

  std::unique_ptr<AmqpConnection> conn_;
  Status failed_;
};

}  // namespace

// ---- The server ----------------------------------------------------------

StatusOr<std::unique_ptr<RabbitMqServer>> RabbitMqServer::Start(const std::string& work_dir) {
  struct stat st;
  if (stat(work_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("RabbitMQ work folder " + work_dir + " is not an existing folder");
  }
  if (access(kServerScript, X_OK) != 0) {
    return Status::NotFound(std::string("no RabbitMQ server at ") + kServerScript +
                            " (install the Debian package rabbitmq-server)");
  }
  auto ports = FreeLoopbackPorts(3);
  if (!ports.ok()) return ports.status();

  // From here on, returning destroys `server`, which stops what started.
  std::unique_ptr<RabbitMqServer> server(new RabbitMqServer());
  server->work_dir_ = work_dir;
  server->amqp_port_ = (*ports)[0];
  const int dist_port = (*ports)[1];
  const int epmd_port = (*ports)[2];

  // Unique per process and start, so that two nodes of one bench never
  // share a name, even if one lingers.
  static std::atomic<int> starts{0};
  const std::string node =
      "liaison-bench-" + std::to_string(getpid()) + "-" + std::to_string(++starts) + "@localhost";

  const std::string home = work_dir + "/home";
  const std::string log_dir = work_dir + "/log";
  const std::string data_dir = work_dir + "/mnesia";
  const std::string conf_d = work_dir + "/conf.d";
  for (const std::string& dir : {home, log_dir, data_dir, conf_d}) LIAISON_RETURN_IF_ERROR(MakeDir(dir));
  const std::string config = work_dir + "/rabbitmq.conf";
  const std::string env_conf = work_dir + "/rabbitmq-env.conf";
  const std::string plugins = work_dir + "/enabled_plugins";
  // Stock settings: the bench measures RabbitMQ as shipped (durable queues
  // on disk, the message store's own fsync policy, default memory and disk
  // alarms). The listeners come from the environment below.
  LIAISON_RETURN_IF_ERROR(WriteFile(config, "# liaison bench: RabbitMQ's defaults.\n"));
  // Read by the start script and the node in place of
  // /etc/rabbitmq/rabbitmq-env.conf; empty so nothing of the system's applies.
  LIAISON_RETURN_IF_ERROR(WriteFile(env_conf, "# liaison bench: no settings.\n"));
  LIAISON_RETURN_IF_ERROR(WriteFile(plugins, "[].\n"));  // no plugins (no management UI)
  server->log_path_ = log_dir + "/" + node + ".log";
  server->stdout_path_ = log_dir + "/stdout.log";
  server->stderr_path_ = log_dir + "/stderr.log";
  const std::string epmd_log = log_dir + "/epmd.log";

  // A clean environment: nothing RABBITMQ_* or ERL_* of the caller's leaks in.
  const char* path = std::getenv("PATH");
  std::vector<std::string> env = {
      std::string("PATH=") + (path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
      "HOME=" + home,  // where Erlang writes .erlang.cookie
      "LANG=C.UTF-8",
      "LC_ALL=C.UTF-8",
      // Our own epmd: Erlang nodes register with and look up the epmd on
      // this port, never the system's on 4369.
      "ERL_EPMD_PORT=" + std::to_string(epmd_port),
      std::string("ERL_EPMD_ADDRESS=") + kLoopback,
  };

  auto epmd = Spawn({"epmd", "-port", std::to_string(epmd_port), "-address", kLoopback}, env, work_dir,
                    epmd_log, epmd_log);
  if (!epmd.ok()) return epmd.status();
  server->epmd_pid_ = *epmd;
  for (const auto epmd_deadline = Clock::now() + kConnectTimeout; !TcpConnects(epmd_port);) {
    int status = 0;
    if (WaitExit(server->epmd_pid_, milliseconds(0), &status)) {
      server->epmd_pid_ = -1;
      return Status::Unavailable("epmd for RabbitMQ exited (" + ExitText(status) + "): " + TailOf(epmd_log, 3));
    }
    if (Clock::now() >= epmd_deadline) {
      return Status::Unavailable("epmd for RabbitMQ did not listen on 127.0.0.1:" + std::to_string(epmd_port));
    }
    std::this_thread::sleep_for(milliseconds(20));
  }

  env.insert(env.end(), {
      "RABBITMQ_NODENAME=" + node,
      std::string("RABBITMQ_NODE_IP_ADDRESS=") + kLoopback,
      "RABBITMQ_NODE_PORT=" + std::to_string(server->amqp_port_),
      "RABBITMQ_DIST_PORT=" + std::to_string(dist_port),
      // The distribution listener binds every interface unless told.
      "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
      "RABBITMQ_CONF_ENV_FILE=" + env_conf,
      "RABBITMQ_CONFIG_FILE=" + config,
      "RABBITMQ_CONFIG_FILES=" + conf_d + "/*.conf",                 // empty: not /etc/rabbitmq/conf.d
      "RABBITMQ_ADVANCED_CONFIG_FILE=" + work_dir + "/advanced.config",  // absent: not /etc/rabbitmq's
      "RABBITMQ_ENABLED_PLUGINS_FILE=" + plugins,
      // Data (mnesia, message stores, quorum and stream dirs, feature
      // flags, pid file) lives under the mnesia base.
      "RABBITMQ_MNESIA_BASE=" + data_dir,
      "RABBITMQ_LOG_BASE=" + log_dir,
      "ERL_CRASH_DUMP=" + log_dir + "/erl_crash.dump",
  });
  auto spawned = Spawn({kServerScript}, env, work_dir, server->stdout_path_, server->stderr_path_);
  if (!spawned.ok()) return spawned.status();
  server->server_pid_ = *spawned;

  const auto diagnostics = [&server] {
    std::string text = "; see " + server->log_path_ + " and " + server->stdout_path_;
    std::string tail = TailOf(server->stderr_path_, 3);
    if (tail.empty()) tail = TailOf(server->stdout_path_, 3);
    if (!tail.empty()) text += " (last lines: " + tail + ")";
    return text;
  };
  const auto deadline = Clock::now() + kStartTimeout;
  for (;;) {
    int status = 0;
    if (WaitExit(server->server_pid_, milliseconds(0), &status)) {
      kill(-server->server_pid_, SIGKILL);  // whatever of its group is left
      server->server_pid_ = -1;
      return Status::Unavailable("RabbitMQ stopped while starting (its start script: " + ExitText(status) + ")" + diagnostics());
    }
    // Ready means what the bench needs: a login. The listener opens only
    // after every boot step has run.
    auto conn = AmqpConnection::Open(server->amqp_port_, seconds(2));
    if (conn.ok()) break;
    if (Clock::now() >= deadline) {
      return Status::DeadlineExceeded("RabbitMQ did not accept a login within " +
                                      std::to_string(kStartTimeout.count()) +
                                      " s (last attempt: " + conn.status().message() + ")" + diagnostics());
    }
    std::this_thread::sleep_for(milliseconds(200));
  }

  // The start script runs erl in the background and waits for it; erl
  // execs beam.smp, so the VM is the script's child.
  for (const ProcStat& p : Descendants(server->server_pid_)) {
    if (p.comm == "beam.smp" && p.pgrp == server->server_pid_) {
      server->beam_pid_ = p.pid;
      break;
    }
  }
  if (server->beam_pid_ < 0) {
    return Status::Internal("RabbitMQ answers but its beam.smp process is not among the start script's"
                            " children" + diagnostics());
  }
  return server;
}

RabbitMqServer::~RabbitMqServer() { Stop(); }

void RabbitMqServer::Stop() {
  if (server_pid_ > 0) {
    // erl_child_setup (and the inet_gethost it starts) call setsid(), so a
    // signal to the process group misses them; note them now, while they
    // are still below the start script, and see that they end with the VM.
    const std::vector<ProcStat> helpers = Descendants(server_pid_);
    // SIGTERM to the script and the VM: the script's trap passes it on and
    // waits, and the VM takes it as a clean shutdown.
    kill(-server_pid_, SIGTERM);
    if (!WaitExit(server_pid_, kStopGrace)) {
      kill(-server_pid_, SIGKILL);
      WaitExit(server_pid_, seconds(5));
    }
    // The script ends after the VM; a group SIGKILL has hit the VM too.
    // The helpers exit when the VM's pipes close.
    const auto deadline = Clock::now() + seconds(3);
    const auto any_runs = [&helpers] {
      for (const ProcStat& p : helpers) {
        if (StillRuns(p)) return true;
      }
      return false;
    };
    while (any_runs()) {
      if (Clock::now() >= deadline) {
        for (const ProcStat& p : helpers) {
          if (StillRuns(p)) kill(p.pid, SIGKILL);
        }
        break;
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    server_pid_ = -1;
    beam_pid_ = -1;
  }
  if (epmd_pid_ > 0) {
    kill(epmd_pid_, SIGTERM);
    if (!WaitExit(epmd_pid_, seconds(2))) {
      kill(epmd_pid_, SIGKILL);
      WaitExit(epmd_pid_, seconds(2));
    }
    epmd_pid_ = -1;
  }
}

// ---- Clients ---------------------------------------------------------------

StatusOr<std::unique_ptr<SenderClient>> ConnectRabbitSender(int port, const std::string& queue,
                                                            size_t body_size) {
  auto conn = AmqpConnection::Open(port, kConnectTimeout);
  if (!conn.ok()) return conn.status().WithContext("RabbitMQ sender");
  LIAISON_RETURN_IF_ERROR((*conn)->DeclareQueue(queue).WithContext("RabbitMQ sender"));
  amqp_confirm_select((*conn)->state(), kChannel);
  LIAISON_RETURN_IF_ERROR((*conn)->Check("cannot turn on publisher confirms").WithContext("RabbitMQ sender"));
  return std::unique_ptr<SenderClient>(new RabbitSender(std::move(*conn), queue, body_size));
}

StatusOr<std::unique_ptr<ReceiverClient>> ConnectRabbitReceiver(int port, const std::string& queue,
                                                                uint16_t prefetch) {
  auto conn = AmqpConnection::Open(port, kConnectTimeout);
  if (!conn.ok()) return conn.status().WithContext("RabbitMQ receiver");
  AmqpConnection& c = **conn;
  LIAISON_RETURN_IF_ERROR(c.DeclareQueue(queue).WithContext("RabbitMQ receiver"));
  amqp_basic_qos(c.state(), kChannel, /*prefetch_size=*/0, prefetch, /*global=*/0);
  LIAISON_RETURN_IF_ERROR(c.Check("cannot set prefetch to " + std::to_string(prefetch))
                              .WithContext("RabbitMQ receiver"));
  amqp_basic_consume(c.state(), kChannel, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes,
                     /*no_local=*/0, /*no_ack=*/0, /*exclusive=*/0, amqp_empty_table);
  LIAISON_RETURN_IF_ERROR(c.Check("cannot consume from queue '" + queue + "'").WithContext("RabbitMQ receiver"));
  return std::unique_ptr<ReceiverClient>(new RabbitReceiver(std::move(*conn)));
}

Status PurgeRabbitQueue(int port, const std::string& queue) {
  auto conn = AmqpConnection::Open(port, kConnectTimeout);
  if (!conn.ok()) return conn.status().WithContext("purging RabbitMQ queue");
  LIAISON_RETURN_IF_ERROR((*conn)->DeclareQueue(queue));
  amqp_queue_purge((*conn)->state(), kChannel, amqp_cstring_bytes(queue.c_str()));
  return (*conn)->Check("cannot purge queue '" + queue + "'");
}

}  // namespace liaison::bench
