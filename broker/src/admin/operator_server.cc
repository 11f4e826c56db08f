#include "admin/operator_server.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <regex>
#include <sstream>
#include <thread>

#include "liaison/logging.h"
#include "liaison/version.h"
#include "store/store.h"

namespace liaison::broker {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

constexpr int kTimeoutSeconds = 3;        // to read a request, and to write the answer
constexpr uint32_t kMaxHeaderBytes = 8 * 1024;
constexpr int kDefaultEntries = 100;
constexpr int kMaxEntries = 10000;
constexpr off_t kLedgerTailBytes = 4 * 1024 * 1024;  // read back from the ledger's end

struct Answer {
  http::status status = http::status::ok;
  std::string body;
  bool json = false;
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\u%04x", c);
          out += hex;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  return out + "\"";
}

// Client-chosen text (message ids) as shown: bounded, and escaped so that it
// cannot break a line or pose as another column.
std::string Shown(std::string_view text) { return LogValue(text); }

std::string Age(int64_t created_ms, int64_t now_ms) {
  if (created_ms <= 0) return "-";
  int64_t s = std::max<int64_t>(0, (now_ms - created_ms) / 1000);
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

// The ledger's last record and last signed checkpoint, from the file's end.
struct LedgerHead {
  uint64_t last_seq = 0;
  uint64_t last_checkpoint_seq = 0;  // 0: none in the part read
  std::string error;
};

LedgerHead ReadLedgerHead(const std::string& path) {
  LedgerHead head;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    head.error = "cannot open " + path;
    return head;
  }
  struct stat st {};
  std::string text;
  if (::fstat(fd, &st) == 0) {
    const off_t from = std::max<off_t>(0, st.st_size - kLedgerTailBytes);
    text.resize(static_cast<size_t>(st.st_size - from));
    size_t got = 0;
    while (got < text.size()) {
      const ssize_t n = ::pread(fd, text.data() + got, text.size() - got, from + static_cast<off_t>(got));
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    if (got < text.size()) head.error = "cannot read " + path;
    text.resize(got);
  } else {
    head.error = "cannot read the size of " + path;
  }
  ::close(fd);
  static const std::regex kSeq(R"re("seq"\s*:\s*(\d+))re");
  static const std::regex kCheckpoint(R"re("decision"\s*:\s*"checkpoint")re");
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (lines.eof()) break;  // no newline: a torn or unfinished last line
    std::smatch m;
    if (!std::regex_search(line, m, kSeq)) continue;
    const uint64_t seq = std::stoull(m[1].str());
    head.last_seq = seq;
    if (std::regex_search(line, kCheckpoint)) head.last_checkpoint_seq = seq;
  }
  return head;
}

// "a=1&b=2" -> value of `key` ("" if absent).
std::string QueryValue(std::string_view query, std::string_view key) {
  size_t pos = 0;
  while (pos <= query.size()) {
    const size_t end = std::min(query.find('&', pos), query.size());
    const std::string_view pair = query.substr(pos, end - pos);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == key) return eq == std::string_view::npos ? "" : std::string(pair.substr(eq + 1));
    pos = end + 1;
  }
  return "";
}

}  // namespace

struct OperatorServer::Impl {
  explicit Impl(OperatorSources s) : sources(std::move(s)), acceptor(io) {}

  Answer Status(bool json) {
    const int64_t now = NowMs();
    const auto connected = sources.metrics->ConnectedAgencies();
    const std::string policy_version = sources.policy_version();
    const LedgerHead ledger = ReadLedgerHead(sources.ledger_path);
    auto queues = sources.store->QueueSummaries();
    if (!queues.ok()) return {http::status::service_unavailable, queues.status().message() + "\n"};
    const int64_t uptime = (now - started_ms) / 1000;
    int64_t set_aside = 0, queued = 0;
    for (const auto& q : *queues) {
      set_aside += q.set_aside;
      queued += q.queued;
    }
    std::ostringstream out;
    if (json) {
      out << "{\"role\": \"active\", \"uptime_seconds\": " << uptime << ", \"version\": "
          << JsonString(ReleaseVersion()) << ", \"source\": " << JsonString(SourceVersion())
          << ", \"policy_version\": " << JsonString(policy_version) << ", \"connected_agencies\": [";
      for (size_t i = 0; i < connected.size(); ++i) out << (i ? ", " : "") << JsonString(connected[i]);
      out << "], \"queued\": " << queued << ", \"set_aside\": " << set_aside << ", \"queues\": [";
      for (size_t i = 0; i < queues->size(); ++i) {
        const auto& q = (*queues)[i];
        out << (i ? ", " : "") << "{\"recipient\": " << JsonString(q.recipient) << ", \"queued\": " << q.queued
            << ", \"oldest_age_seconds\": " << (q.oldest_created_ms > 0 ? (now - q.oldest_created_ms) / 1000 : 0)
            << ", \"set_aside\": " << q.set_aside << "}";
      }
      out << "], \"ledger\": {\"last_record\": " << ledger.last_seq
          << ", \"last_checkpoint\": " << ledger.last_checkpoint_seq;
      if (!ledger.error.empty()) out << ", \"error\": " << JsonString(ledger.error);
      out << "}}\n";
      return {http::status::ok, out.str(), true};
    }
    out << "role:               active (one broker, SQLite store)\n"
        << "uptime:             " << Age(started_ms, now) << "\n"
        << "version:            " << ReleaseVersion() << " (" << SourceVersion() << ")\n"
        << "policy version:     " << policy_version << "\n"
        << "connected agencies: " << connected.size();
    for (size_t i = 0; i < connected.size(); ++i) out << (i ? ", " : " (") << connected[i];
    out << (connected.empty() ? "" : ")") << "\n"
        << "queued messages:    " << queued << "\n"
        << "set aside:          " << set_aside
        << (set_aside > 0 ? " (do not decrypt: see `liaison queues --recipient ID`)" : "") << "\n"
        << "ledger:             last record " << ledger.last_seq << ", last signed checkpoint "
        << ledger.last_checkpoint_seq;
    if (!ledger.error.empty()) out << " (" << ledger.error << ")";
    out << "\n";
    if (!queues->empty()) out << "\n" << QueueTable(*queues, now);
    return {http::status::ok, out.str()};
  }

  static std::string QueueTable(const std::vector<store::QueueSummary>& queues, int64_t now) {
    std::ostringstream out;
    char line[256];
    std::snprintf(line, sizeof line, "%-32s %8s %10s %9s\n", "RECIPIENT", "QUEUED", "OLDEST", "SET-ASIDE");
    out << line;
    for (const auto& q : queues) {
      std::snprintf(line, sizeof line, "%-32s %8lld %10s %9lld\n", q.recipient.c_str(),
                    static_cast<long long>(q.queued), Age(q.oldest_created_ms, now).c_str(),
                    static_cast<long long>(q.set_aside));
      out << line;
    }
    return out.str();
  }

  Answer Queues(const std::string& recipient, const std::string& limit_text, bool json) {
    const int64_t now = NowMs();
    int limit = kDefaultEntries;
    if (!limit_text.empty()) {
      char* end = nullptr;
      const long n = std::strtol(limit_text.c_str(), &end, 10);
      if (*end != '\0' || n < 1 || n > kMaxEntries) {
        return {http::status::bad_request, "limit must be 1.." + std::to_string(kMaxEntries) + "\n"};
      }
      limit = static_cast<int>(n);
    }
    if (recipient.empty()) {
      auto queues = sources.store->QueueSummaries();
      if (!queues.ok()) return {http::status::service_unavailable, queues.status().message() + "\n"};
      if (!json) return {http::status::ok, queues->empty() ? "no queued or set-aside messages\n" : QueueTable(*queues, now)};
      std::ostringstream out;
      out << "[";
      for (size_t i = 0; i < queues->size(); ++i) {
        const auto& q = (*queues)[i];
        out << (i ? ", " : "") << "{\"recipient\": " << JsonString(q.recipient) << ", \"queued\": " << q.queued
            << ", \"oldest_age_seconds\": " << (q.oldest_created_ms > 0 ? (now - q.oldest_created_ms) / 1000 : 0)
            << ", \"set_aside\": " << q.set_aside << "}";
      }
      out << "]\n";
      return {http::status::ok, out.str(), true};
    }
    auto entries = sources.store->QueueEntries(recipient, limit);
    if (!entries.ok()) return {http::status::service_unavailable, entries.status().message() + "\n"};
    std::ostringstream out;
    if (json) {
      out << "[";
      for (size_t i = 0; i < entries->size(); ++i) {
        const auto& e = (*entries)[i];
        out << (i ? ", " : "") << "{\"seq\": " << e.seq << ", \"sender\": " << JsonString(e.sender)
            << ", \"message_id\": " << JsonString(Shown(e.message_id)) << ", \"type\": " << JsonString(e.type)
            << ", \"state\": \"" << (e.set_aside ? "set_aside" : "queued")
            << "\", \"age_seconds\": " << (now - e.created_ms) / 1000 << "}";
      }
      out << "]\n";
      return {http::status::ok, out.str(), true};
    }
    if (entries->empty()) return {http::status::ok, "no queued or set-aside messages for " + Shown(recipient) + "\n"};
    char line[512];
    std::snprintf(line, sizeof line, "%-10s %-24s %-28s %-18s %-9s %s\n", "SEQ", "SENDER", "MESSAGE-ID", "TYPE",
                  "STATE", "AGE");
    out << line;
    for (const auto& e : *entries) {
      std::snprintf(line, sizeof line, "%-10lld %-24s %-28s %-18s %-9s %s\n", static_cast<long long>(e.seq),
                    e.sender.c_str(), Shown(e.message_id).c_str(), e.type.c_str(),
                    e.set_aside ? "set-aside" : "queued", Age(e.created_ms, now).c_str());
      out << line;
    }
    if (static_cast<int>(entries->size()) == limit) out << "(first " << limit << "; --limit N for more)\n";
    return {http::status::ok, out.str()};
  }

  // POST /v1/queues/set-aside: purge or requeue through the broker's core.
  Answer ActOnSetAside(std::string_view query, bool json) {
    SetAsideRequest request;
    request.recipient = QueryValue(query, "recipient");
    const std::string action = QueryValue(query, "action");
    const std::string seqs = QueryValue(query, "seq");
    if (request.recipient.empty()) return {http::status::bad_request, "recipient= is required\n"};
    if (action != "purge" && action != "requeue") return {http::status::bad_request, "action must be purge or requeue\n"};
    request.requeue = action == "requeue";
    if (seqs != "all") {
      for (size_t pos = 0; pos <= seqs.size();) {
        const size_t end = std::min(seqs.find(',', pos), seqs.size());
        const std::string one = seqs.substr(pos, end - pos);
        char* stop = nullptr;
        const long long n = std::strtoll(one.c_str(), &stop, 10);
        if (one.empty() || *stop != '\0' || n < 1) {
          return {http::status::bad_request, "seq must be all or a comma-separated list of SEQ numbers (from "
                                             "liaison queues --recipient ID)\n"};
        }
        request.seqs.push_back(n);
        pos = end + 1;
      }
    }
    if (!sources.set_aside) return {http::status::service_unavailable, "this broker does not act on set-aside messages\n"};
    auto outcome = sources.set_aside(request);
    if (!outcome.ok()) return {http::status::service_unavailable, outcome.status().message() + "\n"};
    const char* verb = request.requeue ? "requeued" : "purged";
    std::ostringstream out;
    if (json) {
      out << "{\"action\": \"" << verb << "\", \"recipient\": " << JsonString(request.recipient) << ", \"done\": [";
      for (size_t i = 0; i < outcome->done.size(); ++i) {
        const auto& c = outcome->done[i];
        out << (i ? ", " : "") << "{\"seq\": " << c.seq << ", \"sender\": " << JsonString(c.sender)
            << ", \"message_id\": " << JsonString(Shown(c.message_id)) << ", \"type\": " << JsonString(c.type) << "}";
      }
      out << "], \"not_set_aside\": [";
      for (size_t i = 0; i < outcome->not_set_aside.size(); ++i) out << (i ? ", " : "") << outcome->not_set_aside[i];
      out << "]}\n";
      return {http::status::ok, out.str(), true};
    }
    out << verb << " " << outcome->done.size() << " set-aside message(s) of " << Shown(request.recipient)
        << (outcome->done.empty() ? "" : " (each recorded in the ledger)") << "\n";
    for (const auto& c : outcome->done) {
      out << "  " << verb << " seq " << c.seq << " from " << c.sender << " id " << Shown(c.message_id) << " "
          << c.type << "\n";
    }
    for (int64_t seq : outcome->not_set_aside) {
      out << "  not set aside for " << Shown(request.recipient) << ", nothing done: seq " << seq << "\n";
    }
    return {outcome->not_set_aside.empty() ? http::status::ok : http::status::not_found, out.str()};
  }

  Answer Route(const http::request<http::string_body>& request) {
    const std::string_view target(request.target().data(), request.target().size());
    const size_t q = target.find('?');
    const std::string_view path = target.substr(0, q);
    const std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    const bool json = QueryValue(query, "format") == "json";
    if (path == "/v1/queues/set-aside") {
      if (request.method() != http::verb::post) return {http::status::method_not_allowed, "only POST\n"};
      return ActOnSetAside(query, json);
    }
    if (request.method() != http::verb::get) return {http::status::method_not_allowed, "only GET\n"};
    if (path == "/v1/status") return Status(json);
    if (path == "/v1/queues") return Queues(QueryValue(query, "recipient"), QueryValue(query, "limit"), json);
    return {http::status::not_found, "not found; try /v1/status or /v1/queues\n"};
  }

  // One connection, handled to the end on this thread: every read and write
  // is bounded by the socket's timeouts.
  void Serve(local::socket socket) {
    const int fd = socket.native_handle();
    const timeval timeout{kTimeoutSeconds, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    Answer answer;
    http::request<http::string_body> request;
    ucred peer{};
    socklen_t peer_len = sizeof peer;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0 ||
        (peer.uid != ::geteuid() && peer.uid != 0)) {
      spdlog::warn("event=operator_refused reason=other_user uid={}", peer.uid);
      answer = {http::status::forbidden, "only the broker's user may use this endpoint\n"};
    } else {
      beast::error_code ec;
      beast::flat_buffer buffer;
      http::request_parser<http::string_body> parser;
      parser.header_limit(kMaxHeaderBytes);
      parser.body_limit(0);
      http::read(socket, buffer, parser, ec);
      if (ec) return;  // timed out, closed, too large or not HTTP
      answer = Route(parser.get());
      spdlog::info("event=operator_request target={} status={}",
                   LogValue(std::string_view(parser.get().target().data(), parser.get().target().size())),
                   static_cast<int>(answer.status));
    }
    http::response<http::string_body> response{answer.status, 11};
    response.set(http::field::content_type, answer.json ? "application/json" : "text/plain");
    response.keep_alive(false);
    response.body() = std::move(answer.body);
    response.prepare_payload();
    beast::error_code ec;
    http::write(socket, response, ec);
    socket.shutdown(local::socket::shutdown_both, ec);
  }

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, local::socket socket) {
      if (ec) {
        if (!acceptor.is_open()) return;
        retry.expires_after(std::chrono::milliseconds(100));
        retry.async_wait([this](beast::error_code) { Accept(); });
        return;
      }
      Serve(std::move(socket));
      Accept();
    });
  }

  OperatorSources sources;
  int64_t started_ms = NowMs();
  asio::io_context io;
  local::acceptor acceptor;
  asio::steady_timer retry{io};
  std::string path;
  std::thread thread;
};

OperatorServer::OperatorServer(OperatorSources sources) : impl_(std::make_unique<Impl>(std::move(sources))) {}

OperatorServer::~OperatorServer() { Stop(); }

Status OperatorServer::Start(const std::string& path) {
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidArgument("admin.socket " + path + " is too long for a Unix socket (at most " +
                                   std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes)");
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::InvalidArgument("admin.socket " + path + " exists and is not a socket; not replacing it");
    }
    ::unlink(path.c_str());  // left by a broker that stopped
  }
  try {
    // Owner-only from the moment it exists: the umask covers bind().
    const mode_t old_mask = ::umask(0177);
    beast::error_code ec;
    impl_->acceptor.open(local());
    impl_->acceptor.bind(local::endpoint(path), ec);
    ::umask(old_mask);
    if (ec) throw beast::system_error(ec);
    if (::chmod(path.c_str(), 0600) != 0) {
      return Status::IoError("cannot make the admin socket " + path + " owner-only");
    }
    impl_->acceptor.listen();
  } catch (const std::exception& e) {
    return Status::Unavailable("cannot listen on the admin socket " + path + ": " + e.what());
  }
  impl_->path = path;
  impl_->Accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  return Status::Ok();
}

void OperatorServer::Stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->retry.cancel();
  });
  impl_->thread.join();
  ::unlink(impl_->path.c_str());
}

}  // namespace liaison::broker
