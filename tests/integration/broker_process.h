// Runs the real liaison-broker binary on a free loopback port with CURVE on,
// from real key and policy files in a temporary folder.
#ifndef LIAISON_TESTS_INTEGRATION_BROKER_PROCESS_H_
#define LIAISON_TESTS_INTEGRATION_BROKER_PROCESS_H_

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "liaison/agent.h"
#include "testing/fixtures.h"

namespace liaison::testing {

class BrokerProcess {
 public:
  // Writes keys, policies and broker.yaml under `dir`. `extra_config` is
  // appended to broker.yaml (e.g. a limits: block). Tests get short timers
  // (heartbeat, redelivery, ledger checkpoints) and debug logs; with
  // `production_defaults` (benchmarks) the broker runs as deployed: the
  // defaults of deploy/config/broker.yaml, logging at info.
  //
  // `store_settings` replaces the store's location in broker.yaml (the
  // default: `path: liaison.db`), e.g. "backend: postgresql\nurl: ...\n",
  // one setting a line; the key file and timers stay as they are. Empty:
  // the suite's store, testing/test_store.h (SQLite unless
  // LIAISON_TEST_STORE=postgresql).
  BrokerProcess(const TempDir& dir, std::vector<TestAgency> agencies,
                const std::string& extra_config = "", bool production_defaults = false,
                const std::string& store_settings = "");
  ~BrokerProcess();  // stops the broker if it runs

  // Starts the broker and waits until it listens. With no endpoint, it
  // binds a free loopback port; pass endpoint() to restart on the same one.
  Status Start(const std::string& endpoint = "tcp://127.0.0.1:*");
  // How long Start waits for the broker to be ready (10 s unless set): the
  // benchmarks' brokers with thousands of agencies load for longer.
  void set_ready_timeout(std::chrono::milliseconds timeout) { ready_timeout_ = timeout; }
  // Start() with RLIMIT_FSIZE = `limit` bytes on the broker (as a full file
  // system would): a write that would grow a file past it fails (EFBIG).
  // The limit is set on this process around the spawn, inherited across
  // exec, and restored at once.
  Status StartWithFileSizeLimit(rlim_t limit, const std::string& endpoint);
  // Sends `signal` and waits; returns the exit status (or -signal number).
  int Stop(int signal = SIGTERM);
  // Waits (bounded) for the broker to exit by itself; its exit code (or
  // -signal), nullopt if it still runs after `timeout_ms`.
  std::optional<int> WaitExit(int timeout_ms);
  // Takes `other`'s keys (CURVE, store, pseudonym, ledger signing): the
  // second broker of an active/standby pair serves as the same broker.
  // The broker must be stopped.
  Status ShareKeysOf(const BrokerProcess& other);
  // Sends a signal without waiting (e.g. SIGHUP).
  void Signal(int signal);
  // SIGSTOP, then waits (bounded, up to `timeout_ms`) until every thread of
  // the broker is stopped: the kernel stops a process's threads one after
  // another, so a message sent right after kill() can still be handled.
  // False if some thread still ran at the deadline.
  bool Pause(int timeout_ms = 5000);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // Rotates the broker's CURVE key the way docs/operations.md section 5
  // does: the current key moves to keys/broker-previous.key and stays served
  // on `previous_endpoint` until `until` (RFC 3339), a new key becomes the
  // current one. Takes effect at the next Start(); the broker must be stopped.
  Status RotateKey(const std::string& previous_endpoint, const std::string& until);
  // Serves with `keys` instead of the key pair made for it, as every broker
  // of a high-availability deployment shares one key. The broker must be
  // stopped; takes effect at the next Start().
  Status UseBrokerKeys(const CurveKeyPair& keys);

  const std::string& endpoint() const { return endpoint_; }
  const CurveKeyPair& broker_keys() const { return broker_keys_; }
  std::string pseudonym_key_path() const { return dir_ + "/keys/pseudonym.key"; }
  std::string log() const;
  // Waits until the log holds `needle` (polling); false after `timeout_ms`.
  bool WaitForLog(const std::string& needle, int timeout_ms = 5000) const;
  const std::string& policies_dir() const { return policies_dir_; }
  const std::string& config_path() const { return config_path_; }
  std::string admin_socket() const { return dir_ + "/admin.sock"; }
  const std::string& store_path() const { return store_path_; }
  const std::string& ledger_path() const { return ledger_path_; }
  std::string ledger_public_key() const { return dir_ + "/keys/ledger-signing.pub"; }

  // Options for an agent of `agency` connecting to this broker.
  AgentOptions AgentFor(const TestAgency& agency, wire::Role role = wire::Role::sender) const;

 private:
  std::string dir_;
  std::string policies_dir_;
  std::string config_path_;
  std::string log_path_;
  std::string ready_path_;
  std::string store_path_;
  std::string ledger_path_;
  CurveKeyPair broker_keys_;
  std::string endpoint_;
  int null_fd_ = -1;
  pid_t pid_ = -1;
  std::chrono::milliseconds ready_timeout_ = std::chrono::seconds(10);
};

// Starts argv[0] (looked up in PATH unless a path) with stdout/stderr on the
// given descriptors (-1: inherited). Throws if it cannot start.
pid_t Spawn(const std::vector<std::string>& argv, int out_fd, int err_fd);
// A waitpid() status as an exit code, or -signal.
int ExitCode(int status);

// Waits (`timeout`) until the process `*pid` writes "ENDPOINT\n" to
// `ready_path` and sets `*endpoint`. If it exits first: `*pid` = -1 and
// Unavailable with its exit code and `diagnostics()` (its log), naming it
// `name`.
Status WaitForReadyFile(pid_t* pid, const std::string& ready_path, const std::string& name,
                        const std::function<std::string()>& diagnostics, std::string* endpoint,
                        std::chrono::milliseconds timeout = std::chrono::seconds(10));
// Sends `signal` to `*pid` and waits; returns the exit code (or -signal).
int StopProcess(pid_t* pid, int signal);
// Polls `read()` until it holds `needle`; false after `timeout_ms`.
bool WaitForText(const std::function<std::string()>& read, const std::string& needle, int timeout_ms);

// Runs a command; returns its exit status and fills stdout/stderr.
int RunCommand(const std::vector<std::string>& argv, std::string* out, std::string* err);

}  // namespace liaison::testing

#endif  // LIAISON_TESTS_INTEGRATION_BROKER_PROCESS_H_
