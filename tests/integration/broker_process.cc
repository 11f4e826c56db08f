#include "integration/broker_process.h"

#include "audit/ledger.h"
#include "liaison/keys.h"
#include "testing/test_store.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace liaison::testing {

pid_t Spawn(const std::vector<std::string>& argv, int out_fd, int err_fd) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  if (err_fd >= 0) posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  return pid;
}

int ExitCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1000;
}

namespace {

// The store's location lines of broker.yaml, indented under store:.
std::string StoreSettings(const std::string& settings) {
  if (settings.empty()) return "  path: liaison.db\n";
  std::string out;
  size_t start = 0;
  while (start < settings.size()) {
    size_t end = settings.find('\n', start);
    if (end == std::string::npos) end = settings.size();
    out += "  " + settings.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out;
}

}  // namespace

BrokerProcess::BrokerProcess(const TempDir& dir, std::vector<TestAgency> agencies,
                             const std::string& extra_config, bool production_defaults,
                             const std::string& store_settings_given)
    : dir_(dir.path().string()),
      policies_dir_(dir_ + "/policies"),
      config_path_(dir_ + "/broker.yaml"),
      log_path_(dir_ + "/broker.log"),
      ready_path_(dir_ + "/endpoint"),
      // The broker must not hold the test's stdout: ctest waits for it to close.
      null_fd_(::open("/dev/null", O_WRONLY | O_CLOEXEC)) {
  auto keys = GenerateCurveKeyPair();
  if (!keys.ok()) throw std::runtime_error(keys.status().ToString());
  broker_keys_ = *keys;
  // A test that names no store runs on the suite's (LIAISON_TEST_STORE).
  const std::string store_settings =
      store_settings_given.empty() ? TestStoreSettings(dir_) : store_settings_given;
  Status st = WriteCurveKeyPair(dir_ + "/keys", "broker", broker_keys_);
  if (!st.ok()) throw std::runtime_error(st.ToString());
  WritePolicies(policies_dir_, agencies);
  st = WriteStoreKey(dir_ + "/keys/store.key");
  if (!st.ok()) throw std::runtime_error(st.ToString());
  st = WritePseudonymKeyFile(dir_ + "/keys/pseudonym.key", "");
  if (!st.ok()) throw std::runtime_error(st.ToString());
  st = audit::WriteSigningKey(dir_ + "/keys", "ledger-signing");
  if (!st.ok()) throw std::runtime_error(st.ToString());
  WriteText(config_path_,
            "listen: tcp://127.0.0.1:*\n"
            "secret_key_file: keys/broker.key\n"
            "pseudonym_key_file: keys/pseudonym.key\n"
            "policies_dir: policies\n" +
                std::string(production_defaults ? "" : "heartbeat_ms: 200\n") +
                "store:\n" + StoreSettings(store_settings) + "  key_file: keys/store.key\n" +
                (production_defaults ? "" : "  redelivery_timeout_ms: 2000\n") +
                "ledger:\n  path: ledger.log\n  signing_key_file: keys/ledger-signing.key\n" +
                (production_defaults ? "" : "  checkpoint_every: 100\n  checkpoint_seconds: 1\n") +
                "admin:\n  listen: 127.0.0.1:0\n  socket: admin.sock\n"
                "log:\n  level: " +
                (production_defaults ? "info" : "debug") +
                "\n  console: false\n  file: broker.log\n" + extra_config);
  store_path_ = dir_ + "/liaison.db";
  ledger_path_ = dir_ + "/ledger.log";
}

BrokerProcess::~BrokerProcess() {
  if (running()) Stop(SIGKILL);
  if (null_fd_ >= 0) ::close(null_fd_);
}

Status WaitForReadyFile(pid_t* pid, const std::string& ready_path, const std::string& name,
                        const std::function<std::string()>& diagnostics, std::string* endpoint,
                        std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(*pid, &status, WNOHANG) == *pid) {
      *pid = -1;
      return Status::Unavailable(name + " exited with " + std::to_string(ExitCode(status)) + "; " +
                                 diagnostics());
    }
    std::string ready = ReadText(ready_path);
    if (!ready.empty() && ready.back() == '\n') {
      *endpoint = ready.substr(0, ready.size() - 1);
      return Status::Ok();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::DeadlineExceeded(name + " did not report ready; " + diagnostics());
}

int StopProcess(pid_t* pid, int signal) {
  if (*pid <= 0) return -1;
  ::kill(*pid, signal);
  int status = 0;
  waitpid(*pid, &status, 0);
  *pid = -1;
  return ExitCode(status);
}

bool WaitForText(const std::function<std::string()>& read, const std::string& needle, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (read().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

Status BrokerProcess::Start(const std::string& endpoint) {
  std::filesystem::remove(ready_path_);
  pid_ = Spawn({LIAISON_BROKER_BIN, "--config", config_path_, "--ready-file", ready_path_,
                "--listen", endpoint},
               null_fd_, null_fd_);
  return WaitForReadyFile(&pid_, ready_path_, "broker", [this] { return "log:\n" + log(); }, &endpoint_,
                          ready_timeout_);
}

Status BrokerProcess::StartWithFileSizeLimit(rlim_t limit, const std::string& endpoint) {
  rlimit before;
  if (getrlimit(RLIMIT_FSIZE, &before) != 0) return Status::Internal("getrlimit failed");
  rlimit limited = before;
  limited.rlim_cur = limit;
  if (setrlimit(RLIMIT_FSIZE, &limited) != 0) return Status::Internal("setrlimit failed");
  // The ready file the broker writes is tiny.
  Status st = Start(endpoint);
  if (setrlimit(RLIMIT_FSIZE, &before) != 0) return Status::Internal("setrlimit (restore) failed");
  return st;
}

int BrokerProcess::Stop(int signal) { return StopProcess(&pid_, signal); }

std::optional<int> BrokerProcess::WaitExit(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (pid_ > 0) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return ExitCode(status);
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

Status BrokerProcess::ShareKeysOf(const BrokerProcess& other) {
  if (running()) return Status::Internal("stop the broker before giving it another's keys");
  std::error_code ec;
  std::filesystem::copy(other.dir_ + "/keys", dir_ + "/keys",
                        std::filesystem::copy_options::overwrite_existing | std::filesystem::copy_options::recursive,
                        ec);
  if (ec) return Status::IoError("cannot copy " + other.dir_ + "/keys: " + ec.message());
  // The case-key ring is shared, not copied: a rotation by either broker
  // must reach the other (docs/audit.md, "Erasure that shreds").
  std::string config = ReadText(config_path_);
  const std::string key_line = "  key_file: keys/store.key\n";
  const size_t at = config.find(key_line);
  if (at == std::string::npos) return Status::Internal("broker.yaml has no store key_file line");
  if (config.find("case_key_ring_file") == std::string::npos) {
    config.insert(at + key_line.size(), "  case_key_ring_file: " + other.dir_ + "/keys/store.key.ring\n");
    WriteText(config_path_, config);
  }
  std::filesystem::remove(dir_ + "/keys/store.key.ring", ec);
  broker_keys_ = other.broker_keys_;
  return Status::Ok();
}

void BrokerProcess::Signal(int signal) {
  if (running()) ::kill(pid_, signal);
}

bool BrokerProcess::Pause(int timeout_ms) {
  if (!running() || ::kill(pid_, SIGSTOP) != 0) return false;
  const std::string tasks = "/proc/" + std::to_string(pid_) + "/task";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    bool all_stopped = true;
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
      // /proc/PID/task/TID/stat: "TID (comm) S ...", the state after the
      // last ')' (comm may hold spaces and parentheses).
      std::ifstream stat(task.path() / "stat");
      std::string line;
      std::getline(stat, line);
      const size_t close = line.rfind(')');
      if (close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'T') {
        all_stopped = false;
        break;
      }
    }
    if (!ec && all_stopped) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

Status BrokerProcess::RotateKey(const std::string& previous_endpoint, const std::string& until) {
  if (running()) return Status::Internal("stop the broker before rotating its key");
  auto fresh = GenerateCurveKeyPair();
  if (!fresh.ok()) return fresh.status();
  std::filesystem::rename(dir_ + "/keys/broker.key", dir_ + "/keys/broker-previous.key");
  std::filesystem::remove(dir_ + "/keys/broker.pub");
  LIAISON_RETURN_IF_ERROR(WriteCurveKeyPair(dir_ + "/keys", "broker", *fresh));
  broker_keys_ = *fresh;
  WriteText(config_path_, ReadText(config_path_) + "previous_keys:\n  - listen: " + previous_endpoint +
                              "\n    secret_key_file: keys/broker-previous.key\n    until: " + until + "\n");
  return Status::Ok();
}

Status BrokerProcess::UseBrokerKeys(const CurveKeyPair& keys) {
  if (running()) return Status::Internal("stop the broker before changing its key");
  std::filesystem::remove(dir_ + "/keys/broker.key");
  std::filesystem::remove(dir_ + "/keys/broker.pub");
  LIAISON_RETURN_IF_ERROR(WriteCurveKeyPair(dir_ + "/keys", "broker", keys));
  broker_keys_ = keys;
  return Status::Ok();
}

std::string BrokerProcess::log() const { return ReadText(log_path_); }

bool BrokerProcess::WaitForLog(const std::string& needle, int timeout_ms) const {
  return WaitForText([this] { return log(); }, needle, timeout_ms);
}

AgentOptions BrokerProcess::AgentFor(const TestAgency& agency, wire::Role role) const {
  AgentOptions o;
  o.broker_endpoint = endpoint_;
  o.broker_public_key = broker_keys_.public_z85;
  o.keys = agency.keys;
  o.role = role;
  o.receipt_timeout = std::chrono::milliseconds(5000);
  o.resend_interval = std::chrono::milliseconds(500);
  o.heartbeat = std::chrono::milliseconds(200);
  return o;
}

int RunCommand(const std::vector<std::string>& argv, std::string* out, std::string* err) {
  TempDir tmp;
  int out_fd = ::open(tmp.file("out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int err_fd = ::open(tmp.file("err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = Spawn(argv, out_fd, err_fd);
  ::close(out_fd);
  ::close(err_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  if (out) *out = ReadText(tmp.file("out"));
  if (err) *err = ReadText(tmp.file("err"));
  return ExitCode(status);
}

}  // namespace liaison::testing
