// liaison-broker: authenticates agencies, routes their messages, answers
// every message with a receipt. See docs/protocol.md and README.md.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sys/stat.h>
#include <thread>

#include "config/broker_config.h"
#include "liaison/keys.h"
#include "liaison/logging.h"
#include "liaison/version.h"
#include "policy/policy_set.h"
#include "policy_gate.h"
#include "policy_watch.h"
#include "admin/admin_server.h"
#include "admin/operator_server.h"
#include "audit/ledger.h"
#include "lease_keeper.h"
#include "postgres/pg_store.h"
#include "sqlite/sqlite_store.h"
#include "transport/reactor.h"

namespace {

constexpr int kExitConfigError = 2;
constexpr int kExitRuntimeError = 1;
// A broker of an active/standby pair that lost its lease, or could not take
// up the active role after taking it, exits with 75 (EX_TEMPFAIL: try
// again) and systemd (Restart=on-failure) starts it again as a standby.
// Exiting rather than stepping down in-process: the core's state (delivery
// windows, a batch the writer may be blocked on with an unreachable
// database, the ledger's open batch) would all have to be torn down while
// a thread may be stuck in the database, whereas an exit is the crash the
// design already survives, and the lease's fence keeps every batch after
// the loss from committing either way (docs/operations.md).
constexpr int kExitLeaseLost = 75;

// What a broker that lost its lease does: nothing of it commits any more
// (the fence); it leaves at once, like a crash, for the supervisor to start
// it again as a standby.
[[noreturn]] void StepDown(const std::string& why) {
  spdlog::error("event=ha_lost_lease reason=\"{}\" action=exit code={}", why, kExitLeaseLost);
  spdlog::default_logger()->flush();
  std::_Exit(kExitLeaseLost);
}

using liaison::policy::PolicySet;

// Names, sizes and modification times of the policy files, their
// signatures and the DPO keys and rotation statements: a change to any of
// them (or a file added or removed) changes the fingerprint.
std::string PolicyFilesFingerprint(const std::string& dir) {
  namespace fs = std::filesystem;
  std::string fingerprint;
  std::error_code ec;
  for (const fs::path& sub : {fs::path(dir), fs::path(dir) / "agencies", fs::path(dir) / "dpo-keys"}) {
    std::vector<std::string> entries;
    for (const auto& entry : fs::directory_iterator(sub, ec)) {
      const auto ext = entry.path().extension();
      if (ext != ".yaml" && ext != ".sig" && ext != ".pub" && ext != ".rotation") continue;
      std::error_code e2;
      const auto size = fs::file_size(entry.path(), e2);
      const auto mtime = fs::last_write_time(entry.path(), e2).time_since_epoch().count();
      entries.push_back(entry.path().string() + ":" + std::to_string(size) + ":" + std::to_string(mtime));
    }
    std::sort(entries.begin(), entries.end());
    for (const auto& e : entries) fingerprint += e + "\n";
  }
  return fingerprint;
}

// The store's file holds case data: owner-only. The ledger holds names
// only and is made 0640 so that auditors of the broker's group may read it
// (docs/audit.md): never writable by the group, never readable by others.
// Files that do not exist yet are made so at the first start.
liaison::Status CheckDataFileModes(const liaison::broker::BrokerConfig& config) {
  struct Rule {
    const std::string& path;
    mode_t forbidden;
    const char* fix;
    const char* who;
  };
  for (const Rule& rule : {Rule{config.store.path, 077, "600", "its owner only"},
                           Rule{config.ledger.path, 027, "640", "its owner and group only, writable by its owner"}}) {
    struct stat st {};
    if (rule.path.empty() || ::stat(rule.path.c_str(), &st) != 0) continue;
    if ((st.st_mode & rule.forbidden) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return liaison::Status::PermissionDenied(rule.path + " has mode " + mode + ": it must be readable by " +
                                               rule.who + " (chmod " + rule.fix + " " + rule.path + ")");
    }
  }
  return liaison::Status::Ok();
}

// One connection to the configured storage backend (config validation
// admits only the backends this build has): the writer thread's (`writer`,
// with `max_value_bytes`, see SqliteStore::Open) or a reader's. A
// PostgreSQL store creates or migrates its schema at the first open.
liaison::StatusOr<std::unique_ptr<liaison::store::Store>> OpenStore(
    const liaison::broker::StoreConfig& config, const liaison::store::StoreKey& key,
    const std::shared_ptr<liaison::store::CaseKeyRing>& ring, bool writer = false, size_t max_value_bytes = 0) {
  if (config.backend == "postgresql") {
    auto opened = liaison::store::PgStore::Open({config.url, config.password}, key, max_value_bytes, ring);
    if (!opened.ok()) return opened.status();
    return std::unique_ptr<liaison::store::Store>(std::move(*opened));
  }
  auto opened = liaison::store::SqliteStore::Open(config.path, key, max_value_bytes,
                                                  /*background_checkpoints=*/writer, ring);
  if (!opened.ok()) return opened.status();
  return std::unique_ptr<liaison::store::Store>(std::move(*opened));
}


// What the message core works with once the broker is the active one: the
// writer's store connection (fenced with the lease's `epoch` on PostgreSQL;
// 0: no lease), the ledger matched to what the store committed, and the
// core's reader connection.
struct ActiveParts {
  std::unique_ptr<liaison::store::Store> store, reader;
  std::unique_ptr<liaison::audit::Ledger> ledger;
};

liaison::StatusOr<ActiveParts> OpenActiveParts(const liaison::broker::BrokerConfig& config,
                                               const liaison::store::StoreKey& key,
                                               const std::shared_ptr<liaison::store::CaseKeyRing>& ring,
                                               const std::shared_ptr<EVP_PKEY>& signing_key,
                                               const std::string& pseudonym_secret, int64_t epoch) {
  // The largest values the broker writes are a recipient's sealed copy (at
  // most kMaxCopyExpansion times the message limit) and a receipt (field
  // names for each recipient): anything larger is a bug, and fails its batch
  // rather than being stored.
  const size_t max_value_bytes = std::max<size_t>(
      config.limits.max_message_bytes * liaison::broker::kMaxCopyExpansion + 64 * 1024, 16 * 1024 * 1024);
  ActiveParts parts;
  if (epoch > 0) {
    auto opened =
        liaison::store::PgStore::Open({config.store.url, config.store.password}, key, max_value_bytes, ring);
    if (!opened.ok()) return opened.status();
    // Every batch from now on first checks that this epoch's lease still
    // runs: once it is lost, nothing more commits.
    (*opened)->FenceWith(epoch);
    if (auto st = (*opened)->SetSessionTimeouts(0, static_cast<int64_t>(config.store.lease_ttl_ms)); !st.ok()) {
      return st;
    }
    parts.store = std::move(*opened);
  } else {
    auto opened = OpenStore(config.store, key, ring, /*writer=*/true, max_value_bytes);
    if (!opened.ok()) return opened.status();
    parts.store = std::move(*opened);
  }
  // The store says which ledger records were committed with their batch;
  // the file is cut or completed to match. A PostgreSQL store keeps every
  // record and is the chain of all the brokers sharing it (docs/audit.md):
  // a file that went another way at its end (a batch that never committed
  // before another broker went on) is cut back to it, then completed.
  auto tail = parts.store->ReadLedgerTail();
  if (!tail.ok()) return tail.status();
  auto ledger = liaison::audit::Ledger::Open(config.ledger.path, signing_key,
                                             liaison::audit::DeriveCaseKey(pseudonym_secret),
                                             config.ledger.checkpoint_every, tail->committed_seq, tail->lines,
                                             /*store_is_authoritative=*/config.store.backend == "postgresql");
  if (!ledger.ok()) return ledger.status();
  if ((*ledger)->repaired_bytes() > 0) {
    spdlog::warn("event=ledger_repaired cut_bytes={} reason=torn_last_write_never_acknowledged",
                 (*ledger)->repaired_bytes());
  }
  if ((*ledger)->uncommitted_cut() > 0 || (*ledger)->restored() > 0) {
    spdlog::warn("event=ledger_repaired cut_records={} restored_records={} reason=matched_to_store_commit",
                 (*ledger)->uncommitted_cut(), (*ledger)->restored());
  }
  spdlog::info("event=ledger_open path={} last_record={} signing_key_fingerprint={}", config.ledger.path,
               (*ledger)->last_seq(), liaison::audit::SigningKeyFingerprint(signing_key.get()));
  parts.ledger = std::move(*ledger);
  // The core reads committed data through its own connection while the
  // writer thread commits through the first.
  auto reader = OpenStore(config.store, key, ring);
  if (!reader.ok()) return reader.status();
  parts.reader = std::move(*reader);
  return parts;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liaison-broker: policy-enforcing message broker for multi-agency case work"};
  app.set_version_flag("--version", [] { return liaison::VersionText("liaison-broker"); },
                       "print the version, the source it was built from and the library versions, and exit");
  bool check_config = false;
  app.add_flag("--check-config", check_config,
               "validate the config, the policies, the keys and the data files' modes, print what was "
               "checked and exit (0: all good, 2: errors, as file:line) without starting");
  std::string config_path, listen, policies_dir, secret_key, log_level, log_format, log_file, ready_file;
  app.add_option("--config", config_path, "broker config file (YAML)")->required();
  app.add_option("--listen", listen, "override listen endpoint, e.g. tcp://127.0.0.1:7700");
  app.add_option("--policies", policies_dir, "override policies directory");
  app.add_option("--secret-key", secret_key, "override the broker's secret key file");
  app.add_option("--log-level", log_level, "override log level");
  app.add_option("--log-format", log_format, "override log format (text|json)");
  app.add_option("--log-file", log_file, "override log file");
  app.add_option("--ready-file", ready_file,
                 "once listening, write the bound endpoint to this file (for scripts and tests)");
  CLI11_PARSE(app, argc, argv);
  // A file-size limit (ulimit -f) then fails writes with EFBIG, handled like
  // a full disk (the batch is answered unavailable), instead of killing the
  // broker mid-write.
  std::signal(SIGXFSZ, SIG_IGN);

  auto config = liaison::broker::LoadBrokerConfig(config_path);
  if (!config.ok()) {
    std::cerr << "liaison-broker: bad config:\n" << config.status().message() << "\n";
    return kExitConfigError;
  }
  if (!listen.empty()) config->listen = listen;
  if (!policies_dir.empty()) config->policies_dir = policies_dir;
  if (!secret_key.empty()) config->secret_key_file = secret_key;
  if (!log_level.empty()) config->log.level = log_level;
  if (!log_format.empty()) config->log.format = log_format;
  if (!log_file.empty()) config->log.file = log_file;

  if (auto st = liaison::broker::CheckKeyEndpoints(*config); !st.ok()) {
    std::cerr << "liaison-broker: bad config:\n" << config_path << ": " << st.message() << "\n";
    return kExitConfigError;
  }
  if (check_config) {
    // Only the console: a check must not write into the running broker's log file.
    config->log.file.clear();
    config->log.console = true;
    config->log.format = "text";
  }
  if (auto st = liaison::SetupLogging("liaison-broker", config->log); !st.ok()) {
    std::cerr << "liaison-broker: " << st.message() << "\n";
    return kExitConfigError;
  }
  auto keys = liaison::LoadSecretKeyFile(config->secret_key_file);
  if (!keys.ok()) {
    spdlog::critical("event=start_failed reason=\"{}\"", keys.status().message());
    return kExitConfigError;
  }
  std::vector<liaison::broker::ServerKey> server_keys = {{*keys, config->listen}};
  for (const auto& previous : config->previous_keys) {
    auto old_keys = liaison::LoadSecretKeyFile(previous.secret_key_file);
    if (!old_keys.ok()) {
      spdlog::critical("event=start_failed reason=\"previous_keys: {}\"", old_keys.status().message());
      return kExitConfigError;
    }
    for (const auto& other : server_keys) {
      if (other.keys.public_z85 == old_keys->public_z85) {
        spdlog::critical("event=start_failed reason=\"previous_keys: {} holds the same key as {}; a previous "
                         "key must be the one being retired, not the current one or a copy\"",
                         previous.secret_key_file, other.listen);
        return kExitConfigError;
      }
    }
    server_keys.push_back({*old_keys, previous.listen, previous.until_ms});
  }
  // Pseudonyms are keyed from the pseudonym key (HKDF per recipient), not
  // from the CURVE key: rotating that one must not change them.
  auto pseudonym_key = liaison::LoadPseudonymKeyFile(config->pseudonym_key_file);
  if (!pseudonym_key.ok()) {
    spdlog::critical("event=start_failed reason=\"{}\"", pseudonym_key.status().message());
    return kExitConfigError;
  }
  const std::string& secret = *pseudonym_key;
  liaison::broker::PolicyGate gate(*config, secret);
  if (auto st = gate.Init(); !st.ok()) {
    spdlog::critical("event=start_failed reason=\"{}\"", st.message());
    return kExitConfigError;
  }
  if (!config->policy_signing.required) {
    spdlog::warn("event=policy_signing_off detail=\"unsigned mode: agency policy files go live without their "
                 "DPO's signature; turn policy_signing.required on for production (docs/operations.md)\"");
  }
  auto first = gate.Load("");
  if (!first.set) {
    const bool invalid = !first.events.empty() && first.events.front().reason == "invalid";
    spdlog::critical("event=start_failed reason={}\n{}", invalid ? "policies_invalid" : "policies_unsigned",
                     first.error);
    return kExitConfigError;
  }
  const std::shared_ptr<const PolicySet> policies = first.set;

  // Signals are taken by sigwait() on this thread only; every other thread
  // inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto store_key = liaison::LoadStoreKey(config->store.key_file);
  if (!store_key.ok()) {
    spdlog::critical("event=start_failed reason=\"{}\"", store_key.status().message());
    return kExitConfigError;
  }
  if (check_config) {
    auto signing = liaison::audit::LoadSigningKey(config->ledger.signing_key_file);
    if (!signing.ok()) {
      std::cerr << "liaison-broker: " << signing.status().message() << "\n";
      return kExitConfigError;
    }
    if (auto st = CheckDataFileModes(*config); !st.ok()) {
      std::cerr << "liaison-broker: " << st.message() << "\n";
      return kExitConfigError;
    }
    std::string store_line;
    if (config->store.backend == "postgresql") {
      // A dry run: the database is reached and its schema read, nothing
      // is created or migrated.
      auto version = liaison::store::PgStore::ProbeSchemaVersion({config->store.url, config->store.password});
      if (!version.ok()) {
        std::cerr << "liaison-broker: " << version.status().message() << "\n";
        return kExitConfigError;
      }
      const int target = liaison::store::PgStore::kSchemaVersion;
      store_line = "store ok: " + liaison::store::DescribePgUrl(config->store.url) + ", schema version " +
                   std::to_string(*version) +
                   (*version == target ? std::string(" (current)")
                                       : " (the broker migrates it to " + std::to_string(target) + " at start)");
    }
    std::cout << "config ok: " << config_path << "\n"
              << "policies ok: " << config->policies_dir << " (" << policies->directory().agencies().size()
              << " agencies, policy_version " << policies->version() << ")\n"
              << "keys ok: broker, " << config->previous_keys.size() << " previous, pseudonym, store, ledger signing\n";
    if (store_line.empty()) {
      std::cout << "file modes ok: " << config->store.path << ", " << config->ledger.path << "\n";
    } else {
      std::cout << "file modes ok: " << config->ledger.path << "\n" << store_line << "\n";
    }
    return 0;
  }
  auto signing_key = liaison::audit::LoadSigningKey(config->ledger.signing_key_file);
  if (!signing_key.ok()) {
    spdlog::critical("event=start_failed reason=\"{}\"", signing_key.status().message());
    return kExitConfigError;
  }
  // One ring for every store connection of this process (made at the first
  // start): the writer rotates it, the readers see its new epoch at once.
  std::shared_ptr<liaison::store::CaseKeyRing> ring;
  {
    auto opened = liaison::store::CaseKeyRing::Open(config->store.case_key_ring_file, *store_key);
    if (!opened.ok()) {
      spdlog::critical("event=start_failed reason=\"{}\"", opened.status().message());
      return kExitConfigError;
    }
    ring = std::move(*opened);
  }
  liaison::broker::Metrics metrics;
  // On a PostgreSQL store the broker starts as a standby and becomes the
  // active one when it takes the lease (lease_keeper.h); on SQLite it is
  // the only broker and serves at once.
  const bool paired = config->store.backend == "postgresql";
  std::unique_ptr<liaison::broker::Reactor> reactor_holder;
  std::unique_ptr<liaison::broker::LeaseKeeper> keeper;
  int64_t held_epoch = 0;  // the lease taken at start (paired only)
  const auto first_take_at = std::chrono::steady_clock::now();
  if (paired) {
    auto lease_store = liaison::store::PgStore::Open({config->store.url, config->store.password}, *store_key);
    if (!lease_store.ok()) {
      spdlog::critical("event=start_failed reason=\"{}\"", lease_store.status().message());
      return kExitRuntimeError;
    }
    if (auto st = (*lease_store)->SetSessionTimeouts(static_cast<int64_t>(config->store.lease_renew_ms), 0);
        !st.ok()) {
      spdlog::critical("event=start_failed reason=\"{}\"", st.message());
      return kExitRuntimeError;
    }
    // One try before anything listens: a broker restarted after a crash
    // (same holder) or the first of a pair takes the lease at once and
    // serves from its first message, never answering `standby` meanwhile.
    const std::string holder = liaison::broker::LeaseKeeper::MakeHolder(config_path);
    auto taken = (*lease_store)->AcquireLease(holder, static_cast<int64_t>(config->store.lease_ttl_ms));
    if (!taken.ok()) {
      spdlog::critical("event=start_failed reason=\"{}\"", taken.status().message());
      return kExitRuntimeError;
    }
    held_epoch = taken->value_or(0);
    keeper = std::make_unique<liaison::broker::LeaseKeeper>(
        std::move(*lease_store),
        liaison::broker::LeaseKeeper::Options{holder, static_cast<int64_t>(config->store.lease_ttl_ms),
                                              static_cast<int64_t>(config->store.lease_renew_ms)},
        &metrics);
    metrics.SetHaSource([k = keeper.get()] { return k->State(); });
    if (held_epoch > 0) {
      // Renewed from now on: bringing the ledger file up to the database
      // may take longer than the lease. The keeper takes no lease while
      // it holds one, so on_taken is never called.
      keeper->Start([](int64_t) { return false; }, StepDown, held_epoch, first_take_at);
      auto parts = OpenActiveParts(*config, *store_key, ring, *signing_key, secret, held_epoch);
      if (!parts.ok()) {
        spdlog::critical("event=start_failed reason=\"{}\"", parts.status().message());
        return kExitRuntimeError;
      }
      reactor_holder = std::make_unique<liaison::broker::Reactor>(
          *config, std::move(server_keys), policies, std::move(parts->store), std::move(parts->reader),
          std::move(parts->ledger), &metrics);
    } else {
      spdlog::info("event=ha_standby holder={} detail=\"another broker holds the store's lease; this one answers "
                   "standby until it can take it\"",
                   holder);
      reactor_holder = std::make_unique<liaison::broker::Reactor>(*config, std::move(server_keys), policies, &metrics);
    }
  } else {
    auto parts = OpenActiveParts(*config, *store_key, ring, *signing_key, secret, /*epoch=*/0);
    if (!parts.ok()) {
      spdlog::critical("event=start_failed reason=\"{}\"", parts.status().message());
      return kExitRuntimeError;
    }
    reactor_holder = std::make_unique<liaison::broker::Reactor>(*config, std::move(server_keys), policies,
                                                                std::move(parts->store), std::move(parts->reader),
                                                                std::move(parts->ledger), &metrics);
  }
  liaison::broker::Reactor& reactor = *reactor_holder;
  reactor.RecordEvents(std::move(first.events));
  metrics.SetReadyDetails(gate.Describe());
  liaison::broker::AdminServer admin(metrics);
  // The gauges the admin thread renders read the store through a connection
  // of their own.
  auto gauge_reader = OpenStore(config->store, *store_key, ring);
  if (!gauge_reader.ok()) {
    spdlog::critical("event=start_failed reason=\"{}\"", gauge_reader.status().message());
    return kExitRuntimeError;
  }
  metrics.SetGaugeSource([&reactor, gauges_store = std::shared_ptr<liaison::store::Store>(std::move(*gauge_reader))] {
    liaison::broker::Metrics::Gauges gauges;
    gauges.policy_version = reactor.policies()->version();
    auto queues = gauges_store->QueueSummaries();
    if (!queues.ok()) return gauges;  // the store's trouble shows in its own counters and logs
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    for (const auto& q : *queues) {
      gauges.queues.push_back(
          {q.recipient, q.oldest_created_ms > 0 ? std::max<int64_t>(0, (now_ms - q.oldest_created_ms) / 1000) : 0,
           q.set_aside});
    }
    return gauges;
  });
  // The operators' endpoint reads the store through a third connection.
  std::unique_ptr<liaison::broker::OperatorServer> operators;
  if (!config->admin_socket.empty()) {
    auto operator_reader = OpenStore(config->store, *store_key, ring);
    if (!operator_reader.ok()) {
      spdlog::critical("event=start_failed reason=\"{}\"", operator_reader.status().message());
      return kExitRuntimeError;
    }
    liaison::broker::OperatorSources sources;
    sources.metrics = &metrics;
    sources.policy_version = [&reactor] { return reactor.policies()->version(); };
    sources.store = std::move(*operator_reader);
    sources.ledger_path = config->ledger.path;
    sources.set_aside = [&reactor](const liaison::broker::SetAsideRequest& request) {
      return reactor.ActOnSetAside(request, std::chrono::seconds(4));
    };
    operators = std::make_unique<liaison::broker::OperatorServer>(std::move(sources));
    if (auto st = operators->Start(config->admin_socket); !st.ok()) {
      spdlog::critical("event=start_failed reason=\"{}\"", st.message());
      return kExitRuntimeError;
    }
    spdlog::info("event=admin_socket_listening path={}", config->admin_socket);
  }
  if (!config->admin_listen.empty()) {
    if (auto st = admin.Start(config->admin_listen); !st.ok()) {
      spdlog::critical("event=start_failed reason=\"{}\"", st.message());
      return kExitRuntimeError;
    }
    spdlog::info("event=admin_listening endpoint={}", admin.endpoint());
  }
  if (auto st = reactor.Bind(); !st.ok()) {
    spdlog::critical("event=start_failed reason=\"{}\"", st.message());
    return kExitRuntimeError;
  }
  spdlog::info(
      "event=start version={} source={} endpoint={} policies={} policy_version={} policy_signing={} "
      "broker_key_fingerprint={}",
      liaison::ReleaseVersion(), liaison::SourceVersion(), reactor.endpoint(), config->policies_dir,
      policies->version(), config->policy_signing.required ? "on" : "off_unsigned_mode",
               liaison::KeyFingerprint(liaison::DecodeZ85Key(keys->public_z85)));
  if (!ready_file.empty()) {
    std::ofstream(ready_file + ".tmp") << reactor.endpoint() << "\n";
    std::rename((ready_file + ".tmp").c_str(), ready_file.c_str());
  }

  std::thread reactor_thread([&] { reactor.Run(); });
  if (keeper && held_epoch == 0) {
    keeper->Start(
        [&](int64_t epoch) {
          auto parts = OpenActiveParts(*config, *store_key, ring, *signing_key, secret, epoch);
          liaison::Status st = parts.ok() ? reactor.Activate(std::move(parts->store), std::move(parts->reader),
                                                             std::move(parts->ledger), std::chrono::seconds(10))
                                          : parts.status();
          if (!st.ok()) {
            spdlog::critical("event=ha_activation_failed epoch={} reason=\"{}\" action=exit code={}", epoch,
                             st.message(), kExitLeaseLost);
            spdlog::default_logger()->flush();
            std::_Exit(kExitLeaseLost);
          }
          spdlog::info("event=ha_active epoch={} endpoint={}", epoch, reactor.endpoint());
          return true;
        },
        StepDown);
  }
  if (held_epoch > 0) spdlog::info("event=ha_active epoch={} endpoint={}", held_epoch, reactor.endpoint());
  // Reload on SIGHUP, and when the policy files change: inotify raises a
  // SIGHUP once the folder is quiet (policy_watch.h). Without inotify, the
  // files are polled every second, and a change counts once they stayed
  // unchanged for a second (so that a file being written is not read half).
  auto watch = liaison::broker::PolicyWatch::Start(config->policies_dir, [] { ::kill(::getpid(), SIGHUP); });
  if (!watch.ok()) {
    spdlog::warn("event=policy_watch_unavailable reason=\"{}\" action=polling_every_second",
                 watch.status().message());
  }
  std::string fingerprint = PolicyFilesFingerprint(config->policies_dir);
  std::string pending;  // a changed fingerprint waiting to settle
  while (true) {
    const timespec tick{1, 0};
    int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig < 0 && watch.ok()) continue;
    if (sig < 0) {
      std::string now = PolicyFilesFingerprint(config->policies_dir);
      if (now == fingerprint) {
        pending.clear();
        continue;
      }
      if (now != pending) {
        pending = now;  // changed: wait one more tick for it to settle
        continue;
      }
      pending.clear();
      sig = SIGHUP;
      spdlog::info("event=policy_files_changed");
    }
    if (sig == SIGHUP) {
      fingerprint = PolicyFilesFingerprint(config->policies_dir);
      spdlog::info("event=reload_started policies={}", config->policies_dir);
      auto fresh = gate.Load(reactor.policies()->version());
      metrics.Reload(fresh.set != nullptr);
      if (!fresh.set) {
        std::string reasons;
        for (const auto& e : fresh.events) reasons += (reasons.empty() ? "" : ",") + e.reason;
        spdlog::error("event=reload_failed keeping={} reason={}\n{}", reactor.policies()->version(), reasons,
                      fresh.error);
        reactor.RecordEvents(std::move(fresh.events));
        continue;
      }
      reactor.SetPolicies(fresh.set);
      reactor.RecordEvents(std::move(fresh.events));
      metrics.SetReadyDetails(gate.Describe());
      spdlog::info("event=reload_done agencies={} policy_version={}", fresh.set->directory().agencies().size(),
                   fresh.set->version());
      continue;
    }
    spdlog::info("event=signal signal={}", sig == SIGINT ? "SIGINT" : "SIGTERM");
    break;
  }
  reactor.Stop();
  reactor_thread.join();  // the last batch has committed (Pipeline::Shutdown)
  if (keeper) {
    keeper->Stop();
    // A clean stop hands the lease on at once: the standby need not wait
    // out the TTL.
    keeper->Release();
  }
  admin.Stop();
  if (operators) operators->Stop();
  spdlog::info("event=stop");
  return 0;
}
