#include "operator_commands.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "config/broker_config.h"
#include "liaison/keys.h"
#include "liaison/version.h"
#include "sqlite/sqlite_store.h"

namespace liaison::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;
using local = asio::local::stream_protocol;

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kTimeoutSeconds = 10;

int Fail(const std::string& what, int code) {
  std::cerr << "liaison: " << what << "\n";
  return code;
}

StatusOr<std::string> SocketOf(const BrokerTarget& target) {
  if (!target.socket.empty()) return target.socket;
  auto config = broker::LoadBrokerConfig(target.config);
  if (!config.ok()) return config.status();
  if (config->admin_socket.empty()) {
    return Status::InvalidArgument(target.config + " has no admin.socket: add one (e.g. socket: "
                                   "/run/liaison/admin.sock under admin:) and restart the broker, or pass --socket");
  }
  return config->admin_socket;
}

// `method` `target` over the Unix socket; the answer's status and body.
StatusOr<std::pair<int, std::string>> Get(const std::string& socket_path, const std::string& target,
                                          http::verb method = http::verb::get) {
  try {
    asio::io_context io;
    local::socket socket(io);
    socket.connect(local::endpoint(socket_path));
    const timeval timeout{kTimeoutSeconds, 0};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    http::request<http::empty_body> request(method, target, 11);
    request.set(http::field::host, "liaison-broker");
    http::write(socket, request);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    http::read(socket, buffer, parser);
    return std::make_pair(static_cast<int>(parser.get().result_int()), parser.get().body());
  } catch (const std::exception& e) {
    return Status::Unavailable("the broker's admin socket " + socket_path + " did not answer (" + e.what() +
                               "): is the broker running, and are you its user?");
  }
}

int Show(const BrokerTarget& target, const std::string& request) {
  auto socket = SocketOf(target);
  if (!socket.ok()) return Fail(socket.status().message(), kExitUsage);
  auto answer = Get(*socket, request);
  if (!answer.ok()) return Fail(answer.status().message(), kExitFailure);
  if (answer->first != 200) return Fail("the broker answered " + std::to_string(answer->first) + ": " + answer->second, kExitFailure);
  std::cout << answer->second;
  return kExitOk;
}

std::string UrlEncode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// Copies `from` to the new file `to` (mode 0600) up to its last complete
// line (a line being appended meanwhile is left out), fsyncs it, and returns
// the bytes copied and their SHA-256.
struct Copied {
  uint64_t bytes = 0;
  std::string sha256;
};

std::string Hex(const unsigned char* data, size_t size) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 15]);
  }
  return out;
}

StatusOr<Copied> CopyFile(const std::string& from, const std::string& to, bool whole_lines) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Status::IoError("cannot open " + from + ": " + std::strerror(errno));
  const int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) {
    ::close(in);
    return Status::IoError("cannot create " + to + ": " + std::strerror(errno));
  }
  std::vector<char> buffer(1 << 20);
  uint64_t total = 0, last_line_end = 0;
  Status st = Status::Ok();
  while (true) {
    const ssize_t n = ::read(in, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      st = Status::IoError("cannot read " + from + ": " + std::strerror(errno));
      break;
    }
    if (n == 0) break;
    for (ssize_t i = n; i > 0; --i) {
      if (buffer[static_cast<size_t>(i - 1)] == '\n') {
        last_line_end = total + static_cast<uint64_t>(i);
        break;
      }
    }
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = ::write(out, buffer.data() + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        st = Status::IoError("cannot write " + to + ": " + std::strerror(errno));
        break;
      }
      done += w;
    }
    if (!st.ok()) break;
    total += static_cast<uint64_t>(n);
  }
  ::close(in);
  const uint64_t keep = whole_lines ? last_line_end : total;
  if (st.ok() && ::ftruncate(out, static_cast<off_t>(keep)) != 0) {
    st = Status::IoError("cannot cut " + to + ": " + std::strerror(errno));
  }
  if (st.ok() && ::fsync(out) != 0) st = Status::IoError("cannot sync " + to + ": " + std::strerror(errno));
  if (::close(out) != 0 && st.ok()) st = Status::IoError("cannot close " + to + ": " + std::strerror(errno));
  if (!st.ok()) {
    ::unlink(to.c_str());
    return st;
  }
  return Copied{keep, ""};
}

StatusOr<std::string> Sha256File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError("cannot open " + path);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    return Status::Internal("SHA-256 (OpenSSL) failed");
  }
  std::vector<char> buffer(1 << 20);
  bool ok = true;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (in.gcount() > 0) ok &= EVP_DigestUpdate(ctx, buffer.data(), static_cast<size_t>(in.gcount())) == 1;
  }
  ok &= in.eof();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  ok &= EVP_DigestFinal_ex(ctx, digest, &size) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) return Status::IoError("cannot read " + path);
  return Hex(digest, size);
}

Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("cannot open " + dir + ": " + std::strerror(errno));
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Status::IoError("cannot sync " + dir + ": " + std::strerror(errno));
  return Status::Ok();
}

constexpr const char* kStoreName = "store.db";
constexpr const char* kLedgerName = "ledger.log";
constexpr const char* kManifestName = "MANIFEST";

}  // namespace

int StatusCommand(const BrokerTarget& target, bool json) {
  return Show(target, json ? "/v1/status?format=json" : "/v1/status");
}

int QueuesCommand(const BrokerTarget& target, const std::string& recipient, int limit, bool json) {
  std::string request = "/v1/queues?limit=" + std::to_string(limit);
  if (!recipient.empty()) request += "&recipient=" + UrlEncode(recipient);
  if (json) request += "&format=json";
  return Show(target, request);
}

int SetAsideCommand(const BrokerTarget& target, const std::string& recipient, bool requeue, const std::string& seqs,
                    bool json) {
  const char* option = requeue ? "--requeue-set-aside" : "--purge-set-aside";
  if (recipient.empty()) return Fail(std::string(option) + " needs --recipient ID", kExitUsage);
  if (seqs != "all" && (seqs.find_first_not_of("0123456789,") != std::string::npos || seqs.front() == ',' ||
                        seqs.back() == ',' || seqs.find(",,") != std::string::npos)) {
    return Fail(std::string(option) + " takes all or SEQ[,SEQ...] (the SEQ column of liaison queues --recipient " +
                    recipient + ")", kExitUsage);
  }
  auto socket = SocketOf(target);
  if (!socket.ok()) return Fail(socket.status().message(), kExitUsage);
  std::string request = "/v1/queues/set-aside?recipient=" + UrlEncode(recipient) +
                        "&action=" + (requeue ? "requeue" : "purge") + "&seq=" + seqs;
  if (json) request += "&format=json";
  auto answer = Get(*socket, request, http::verb::post);
  if (!answer.ok()) return Fail(answer.status().message(), kExitFailure);
  // 404: some were not set aside; the others were done, and are listed.
  if (answer->first != 200 && answer->first != 404) {
    return Fail("the broker answered " + std::to_string(answer->first) + ": " + answer->second, kExitFailure);
  }
  std::cout << answer->second;
  return answer->first == 200 ? kExitOk : kExitFailure;
}

int BackupCommand(const std::string& config_path, const std::string& out) {
  auto config = broker::LoadBrokerConfig(config_path);
  if (!config.ok()) return Fail(config.status().message(), kExitUsage);
  if (config->store.backend != "sqlite") {
    // The database's own tools keep a consistent copy of a server store.
    return Fail("backup: store.backend is " + config->store.backend + ": back up this store with PostgreSQL's "
                "tools (pg_dump / pg_basebackup), and the ledger file beside it",
                kExitUsage);
  }
  std::error_code ec;
  if (fs::exists(out, ec)) return Fail("backup: " + out + " exists; back up into a new folder", kExitUsage);
  if (const fs::path parent = fs::path(out).parent_path(); !parent.empty()) fs::create_directories(parent, ec);
  if (::mkdir(out.c_str(), 0700) != 0) {
    return Fail("backup: cannot create " + out + ": " + std::strerror(errno), kExitFailure);
  }
  // The store first, then the ledger: the ledger file then holds at least
  // the records the copied store committed, or the store still holds the
  // ones not yet in the file; the broker started on the copy matches the
  // two (records past the store's last commit are set aside).
  const std::string store_copy = out + "/" + kStoreName;
  const std::string ledger_copy = out + "/" + kLedgerName;
  if (Status st = store::SqliteStore::Backup(config->store.path, store_copy); !st.ok()) {
    return Fail(st.message(), kExitFailure);
  }
  auto ledger = CopyFile(config->ledger.path, ledger_copy, /*whole_lines=*/true);
  if (!ledger.ok()) return Fail("backup: " + ledger.status().message(), kExitFailure);
  auto store_sum = Sha256File(store_copy);
  auto ledger_sum = Sha256File(ledger_copy);
  if (!store_sum.ok() || !ledger_sum.ok()) {
    return Fail("backup: " + (!store_sum.ok() ? store_sum.status() : ledger_sum.status()).message(), kExitFailure);
  }
  std::ostringstream manifest;
  manifest << "liaison-backup 1\n"
           << "made_by " << ReleaseVersion() << " " << SourceVersion() << "\n"
           << "made_at_unix " << ::time(nullptr) << "\n"
           << kStoreName << " " << fs::file_size(store_copy, ec) << " " << *store_sum << "\n"
           << kLedgerName << " " << ledger->bytes << " " << *ledger_sum << "\n";
  {
    std::ofstream file(out + "/" + kManifestName);
    file << manifest.str();
    file.flush();
    if (!file) return Fail("backup: cannot write " + out + "/" + kManifestName, kExitFailure);
  }
  if (Status st = SyncDirectory(out); !st.ok()) return Fail("backup: " + st.message(), kExitFailure);
  std::cout << "backup in " << out << ": " << kStoreName << " (" << fs::file_size(store_copy, ec) << " bytes), "
            << kLedgerName << " (" << ledger->bytes << " bytes), " << kManifestName << "\n"
            << "the keys are not in it: back up " << fs::path(config->store.key_file).parent_path().string()
            << " separately (the store key opens the copy)\n";
  return kExitOk;
}

int RestoreCommand(const std::string& config_path, const std::string& from) {
  auto config = broker::LoadBrokerConfig(config_path);
  if (!config.ok()) return Fail(config.status().message(), kExitUsage);
  if (config->store.backend != "sqlite") {
    // The database's own tools keep a consistent copy of a server store.
    return Fail("restore: store.backend is " + config->store.backend + ": restore this store with PostgreSQL's "
                "tools (pg_dump / pg_basebackup), and the ledger file beside it",
                kExitUsage);
  }
  std::ifstream manifest(from + "/" + kManifestName);
  if (!manifest) return Fail("restore: " + from + " has no " + kManifestName + ": not a liaison backup", kExitUsage);
  std::string line, header;
  std::getline(manifest, header);
  if (header != "liaison-backup 1") return Fail("restore: " + from + "/MANIFEST: unknown format", kExitUsage);
  int checked = 0;
  while (std::getline(manifest, line)) {
    std::istringstream fields(line);
    std::string name, sum;
    uint64_t bytes = 0;
    fields >> name;
    if (name != kStoreName && name != kLedgerName) continue;
    fields >> bytes >> sum;
    auto actual = Sha256File(from + "/" + name);
    if (!actual.ok()) return Fail("restore: " + actual.status().message(), kExitFailure);
    if (*actual != sum) {
      return Fail("restore: " + from + "/" + name + " does not match its SHA-256 in the MANIFEST: the backup is "
                  "damaged; use another one", kExitFailure);
    }
    ++checked;
  }
  if (checked != 2) return Fail("restore: " + from + "/MANIFEST does not list the store and the ledger", kExitUsage);
  std::error_code ec;
  for (const std::string& target : {config->store.path, config->store.path + "-wal", config->ledger.path}) {
    if (fs::exists(target, ec)) {
      return Fail("restore: " + target + " exists: stop the broker and move the old store and ledger away "
                  "first (restore never overwrites)", kExitUsage);
    }
  }
  auto store = CopyFile(from + "/" + kStoreName, config->store.path, /*whole_lines=*/false);
  if (!store.ok()) return Fail("restore: " + store.status().message(), kExitFailure);
  auto ledger = CopyFile(from + "/" + kLedgerName, config->ledger.path, /*whole_lines=*/false);
  if (!ledger.ok()) return Fail("restore: " + ledger.status().message(), kExitFailure);
  for (const auto& path : {config->store.path, config->ledger.path}) {
    if (Status st = SyncDirectory(fs::path(path).parent_path().string()); !st.ok()) {
      return Fail("restore: " + st.message(), kExitFailure);
    }
  }
  // The store key of this config must open the copy.
  auto key = LoadStoreKey(config->store.key_file);
  if (!key.ok()) return Fail("restore: " + key.status().message(), kExitUsage);
  // And the case-key ring (kept with the keys, not in the backup) must be
  // this store's, or a newer one (docs/audit.md, "Erasure that shreds").
  std::shared_ptr<store::CaseKeyRing> ring;
  if (fs::exists(config->store.case_key_ring_file, ec)) {
    auto loaded = store::CaseKeyRing::Open(config->store.case_key_ring_file, *key);
    if (!loaded.ok()) return Fail("restore: " + loaded.status().message(), kExitFailure);
    ring = std::move(*loaded);
  } else {
    std::cout << "note: no case-key ring at " << config->store.case_key_ring_file
              << ": if the backed-up broker had one, put its newest copy there before starting the broker "
                 "(without it no queued copy opens)\n";
  }
  auto opened = store::SqliteStore::Open(config->store.path, *key, 0, false, ring);
  if (!opened.ok()) return Fail("restore: the restored store does not open: " + opened.status().message(), kExitFailure);
  std::cout << "restored " << config->store.path << " and " << config->ledger.path << " from " << from
            << "\nnext: liaison audit verify --ledger " << config->ledger.path
            << " --public-key ledger-signing.pub, then start the broker\n";
  return kExitOk;
}

}  // namespace liaison::cli
