#include "testing/pg_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "testing/fixtures.h"

namespace liaison::testing {
namespace {

namespace fs = std::filesystem;

bool IsExecutable(const fs::path& p) { return ::access(p.c_str(), X_OK) == 0; }

bool HasServerPrograms(const fs::path& dir) {
  return IsExecutable(dir / "initdb") && IsExecutable(dir / "pg_ctl") && IsExecutable(dir / "postgres");
}

// A port nothing listens on now (the kernel's pick for port 0). Another
// process may take it before the server binds: Start then tries again.
int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::string RandomPassword() {
  unsigned char bytes[18];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return "liaison-test-password";
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string out;
  for (unsigned char b : bytes) out += kAlphabet[b % 62];
  return out;
}

}  // namespace

std::string PgCluster::FindBinDir() {
  // Set, it is the only place looked at (e.g. /nonexistent shows the skip).
  if (const char* dir = std::getenv("LIAISON_PG_BINDIR")) return HasServerPrograms(dir) ? dir : "";
  // pg_config (libpq-dev) names the server's folder on Debian.
  if (FILE* p = ::popen("pg_config --bindir 2>/dev/null", "r")) {
    char line[4096] = {0};
    const bool got = std::fgets(line, sizeof line, p) != nullptr;
    ::pclose(p);
    std::string dir = got ? line : "";
    while (!dir.empty() && (dir.back() == '\n' || dir.back() == ' ')) dir.pop_back();
    if (!dir.empty() && HasServerPrograms(dir)) return dir;
  }
  std::vector<fs::path> versions;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    if (HasServerPrograms(entry.path() / "bin")) versions.push_back(entry.path() / "bin");
  }
  if (versions.empty()) return "";
  std::sort(versions.begin(), versions.end(), [](const fs::path& a, const fs::path& b) {
    return std::atoi(a.parent_path().filename().c_str()) < std::atoi(b.parent_path().filename().c_str());
  });
  return versions.back().string();
}

Status PgCluster::RunAsOwner(const std::vector<std::string>& argv, std::string* output) const {
  std::vector<std::string> full;
  if (owner_uid_ >= 0) {
    full = {"setpriv", "--reuid=" + std::to_string(owner_uid_), "--regid=" + std::to_string(owner_gid_),
            "--clear-groups", "--"};
  }
  full.insert(full.end(), argv.begin(), argv.end());
  const std::string out_path = dir_ + "/command.out";
  const pid_t pid = ::fork();
  if (pid < 0) return Status::Internal(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    // The server must not hold the test's stdout: ctest waits for it to close.
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, 0);
    ::chdir(dir_.c_str());  // the owner may not be able to read the test's folder
    std::vector<char*> args;
    for (auto& a : full) args.push_back(a.data());
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (output) *output = ReadText(out_path);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::Unavailable(argv[0] + " failed (status " + std::to_string(status) + "): " + ReadText(out_path));
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<PgCluster>> PgCluster::Start(const std::vector<std::string>& settings) {
  std::unique_ptr<PgCluster> c(new PgCluster());
  c->settings_ = settings;
  c->bin_dir_ = FindBinDir();
  if (c->bin_dir_.empty()) {
    return Status::NotFound("PostgreSQL server programs (initdb, pg_ctl, postgres) not found: install "
                            "postgresql (scripts/install-deps does)");
  }
  char tmpl[] = "/tmp/liaison-pg-XXXXXX";
  if (!::mkdtemp(tmpl)) return Status::IoError(std::string("mkdtemp: ") + std::strerror(errno));
  c->dir_ = tmpl;
  c->data_dir_ = c->dir_ + "/data";
  c->log_path_ = c->dir_ + "/server.log";
  c->password_ = RandomPassword();
  if (::geteuid() == 0) {
    const passwd* nobody = ::getpwnam("nobody");
    if (!nobody) return Status::NotFound("running as root, and there is no user nobody to run PostgreSQL as");
    c->owner_uid_ = static_cast<int>(nobody->pw_uid);
    c->owner_gid_ = static_cast<int>(nobody->pw_gid);
    if (::chown(c->dir_.c_str(), nobody->pw_uid, nobody->pw_gid) != 0) {
      return Status::IoError("chown " + c->dir_ + ": " + std::strerror(errno));
    }
  }
  const std::string pwfile = c->dir_ + "/pwfile";
  WriteText(pwfile, c->password_ + "\n");
  ::chmod(pwfile.c_str(), 0600);
  if (c->owner_uid_ >= 0 && ::chown(pwfile.c_str(), c->owner_uid_, c->owner_gid_) != 0) {
    return Status::IoError("chown " + pwfile + ": " + std::strerror(errno));
  }
  LIAISON_RETURN_IF_ERROR(c->RunAsOwner({c->bin_dir_ + "/initdb", "-D", c->data_dir_, "-U", c->user_,
                                         "--pwfile=" + pwfile, "--auth=scram-sha-256", "--encoding=UTF8",
                                         "--locale=C", "--no-sync"},
                                        nullptr));
  fs::remove(pwfile);
  LIAISON_RETURN_IF_ERROR(c->StartServer());
  return c;
}

Status PgCluster::StartServer() {
  // Loopback only; the socket in our folder, not /var/run/postgresql.
  // Commits stay durable (fsync on, synchronous_commit on) as in a deployment.
  // PostgreSQL 15's defaults already let a standby stream from it
  // (wal_level replica, max_wal_senders 10; initdb's pg_hba.conf admits
  // replication from 127.0.0.1 with the same password).
  Status started = Status::Unavailable("no free port");
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = FreeLoopbackPort();
    if (port_ == 0) continue;
    server_options_ = "-c listen_addresses=127.0.0.1 -p " + std::to_string(port_) + " -k " + dir_ +
                      " -c max_connections=100 -c fsync=on";
    for (const std::string& setting : settings_) server_options_ += " -c " + setting;
    started = RunAsOwner({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-l", log_path_, "-w", "-t", "60", "-o",
                          server_options_, "start"},
                         nullptr);
    if (started.ok()) break;
  }
  if (!started.ok()) return Status::Unavailable(started.message() + "\nserver log:\n" + Log());
  running_ = true;
  return Status::Ok();
}

StatusOr<std::unique_ptr<PgCluster>> PgCluster::StartStandby(const std::string& application_name) {
  std::unique_ptr<PgCluster> c(new PgCluster());
  c->bin_dir_ = bin_dir_;
  c->user_ = user_;
  c->password_ = password_;
  c->owner_uid_ = owner_uid_;
  c->owner_gid_ = owner_gid_;
  char tmpl[] = "/tmp/liaison-pg-standby-XXXXXX";
  if (!::mkdtemp(tmpl)) return Status::IoError(std::string("mkdtemp: ") + std::strerror(errno));
  c->dir_ = tmpl;
  c->data_dir_ = c->dir_ + "/data";
  c->log_path_ = c->dir_ + "/server.log";
  if (owner_uid_ >= 0 && ::chown(c->dir_.c_str(), owner_uid_, owner_gid_) != 0) {
    return Status::IoError("chown " + c->dir_ + ": " + std::strerror(errno));
  }
  // The standby's connection to this cluster; application_name is what
  // synchronous_standby_names names.
  const std::string conninfo = "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user_ +
                               " password=" + password_ + " application_name=" + application_name;
  LIAISON_RETURN_IF_ERROR(c->RunAsOwner({bin_dir_ + "/pg_basebackup", "-D", c->data_dir_, "-d", conninfo, "-R",
                                         "-X", "stream", "-c", "fast", "--no-sync"},
                                        nullptr));
  // -R wrote standby.signal and a primary_conninfo; this one (read last)
  // carries the application_name in any case.
  {
    std::ofstream conf(c->data_dir_ + "/postgresql.auto.conf", std::ios::app);
    conf << "primary_conninfo = '" << conninfo << "'\n";
    if (!conf) return Status::IoError("cannot write " + c->data_dir_ + "/postgresql.auto.conf");
  }
  if (owner_uid_ >= 0 && ::chown((c->data_dir_ + "/postgresql.auto.conf").c_str(), owner_uid_, owner_gid_) != 0) {
    return Status::IoError("chown postgresql.auto.conf: " + std::string(std::strerror(errno)));
  }
  LIAISON_RETURN_IF_ERROR(c->StartServer());
  return c;
}

StatusOr<std::string> PgCluster::QueryValue(const std::string& database, const std::string& sql) const {
  const std::string conninfo = Url(database) + "&connect_timeout=10";
  const char* keywords[] = {"dbname", "password", nullptr};
  const char* values[] = {conninfo.c_str(), password_.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, 1);
  if (!conn || PQstatus(conn) != CONNECTION_OK) {
    const std::string error = conn ? PQerrorMessage(conn) : "out of memory";
    if (conn) PQfinish(conn);
    return Status::Unavailable("connecting to the test cluster on port " + std::to_string(port_) + ": " + error);
  }
  PGresult* r = PQexec(conn, sql.c_str());
  const ExecStatusType status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  std::string value, error;
  if (status == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0) {
    value = PQgetvalue(r, 0, 0);
  } else if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    error = PQerrorMessage(conn);
  }
  PQclear(r);
  PQfinish(conn);
  if (!error.empty()) return Status::IoError(sql + ": " + error);
  return value;
}

Status PgCluster::RequireSynchronousStandby(const std::string& application_name) {
  for (const std::string& sql : {"ALTER SYSTEM SET synchronous_standby_names = '" + application_name + "'",
                                 std::string("ALTER SYSTEM SET synchronous_commit = on"),
                                 std::string("SELECT pg_reload_conf()")}) {
    auto done = QueryValue("postgres", sql);
    if (!done.ok()) return done.status();
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::string state;
  while (std::chrono::steady_clock::now() < deadline) {
    auto sync = QueryValue("postgres", "SELECT COALESCE((SELECT sync_state || '/' || state FROM pg_stat_replication "
                                       "WHERE application_name = '" + application_name + "'), 'absent')");
    if (!sync.ok()) return sync.status();
    state = *sync;
    if (state == "sync/streaming") return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status::DeadlineExceeded("the standby " + application_name + " did not become synchronous in 30 s (" +
                                  state + ")\nserver log:\n" + Log());
}

Status PgCluster::Kill() {
  if (!running_) return Status::Ok();
  std::ifstream pidfile(data_dir_ + "/postmaster.pid");
  pid_t postmaster = 0;
  if (!(pidfile >> postmaster) || postmaster <= 0) {
    return Status::NotFound("no postmaster.pid in " + data_dir_ + ": is the server running?");
  }
  // Its processes, found before it dies (then they are the init's).
  std::vector<pid_t> children;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: comm may hold spaces, so read after ')'.
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == postmaster) children.push_back(static_cast<pid_t>(std::atoi(name.c_str())));
  }
  if (::kill(postmaster, SIGKILL) != 0) return Status::Internal("kill -9 " + std::to_string(postmaster) + ": " + std::strerror(errno));
  for (pid_t child : children) ::kill(child, SIGKILL);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  // Dead once it is gone or a zombie (its parent, the init of a
  // container, may be slow to reap it).
  auto alive = [](pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    const auto close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
  };
  while (alive(postmaster)) {
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::DeadlineExceeded("the postmaster " + std::to_string(postmaster) + " outlived SIGKILL for 10 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  running_ = false;
  return Status::Ok();
}

Status PgCluster::Promote() {
  return RunAsOwner({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-w", "-t", "60", "promote"}, nullptr);
}

PgCluster* PgCluster::Shared(std::string* why) {
  static std::string error;
  static std::unique_ptr<PgCluster> shared = [] {
    auto started = Start();
    if (!started.ok()) {
      error = started.status().message();
      return std::unique_ptr<PgCluster>();
    }
    return std::move(*started);
  }();
  if (!shared && why) *why = error;
  return shared.get();
}

Status PgCluster::StopServer() {
  if (!running_) return Status::Ok();
  LIAISON_RETURN_IF_ERROR(
      RunAsOwner({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-m", "fast", "-w", "-t", "30", "stop"}, nullptr));
  running_ = false;
  return Status::Ok();
}

Status PgCluster::RestartServer() {
  if (running_) return Status::Ok();
  LIAISON_RETURN_IF_ERROR(RunAsOwner({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-l", log_path_, "-w", "-t", "60",
                                      "-o", server_options_, "start"},
                                     nullptr));
  running_ = true;
  return Status::Ok();
}

PgCluster::~PgCluster() {
  if (running_) {
    if (!RunAsOwner({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-m", "fast", "-w", "-t", "30", "stop"}, nullptr)
             .ok()) {
      RunAsOwner({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-m", "immediate", "-w", "-t", "30", "stop"}, nullptr);
    }
  }
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

std::string PgCluster::Url(const std::string& database) const {
  return "postgresql://" + user_ + "@127.0.0.1:" + std::to_string(port_) + "/" + database + "?sslmode=disable";
}

StatusOr<std::string> PgCluster::CreateDatabase(const std::string& name) {
  const std::string conninfo = Url("postgres");
  const char* keywords[] = {"dbname", "password", nullptr};
  const char* values[] = {conninfo.c_str(), password_.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, 1);
  if (!conn || PQstatus(conn) != CONNECTION_OK) {
    const std::string error = conn ? PQerrorMessage(conn) : "out of memory";
    if (conn) PQfinish(conn);
    return Status::Unavailable("connecting to the test cluster: " + error);
  }
  PGresult* r = PQexec(conn, ("CREATE DATABASE \"" + name + "\"").c_str());
  const bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
  const std::string error = ok ? "" : PQerrorMessage(conn);
  PQclear(r);
  PQfinish(conn);
  if (!ok) return Status::IoError("CREATE DATABASE " + name + ": " + error);
  return Url(name);
}

std::string PgCluster::Log() const { return ReadText(log_path_); }

}  // namespace liaison::testing
