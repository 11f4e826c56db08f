// The broker's configuration file (deploy/config/broker.yaml is the
// commented example). Relative paths in it are relative to the file's folder.
#ifndef LIAISON_BROKER_CONFIG_BROKER_CONFIG_H_
#define LIAISON_BROKER_CONFIG_BROKER_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "liaison/logging.h"
#include "liaison/status.h"

namespace liaison::broker {

struct Limits {
  uint64_t max_message_bytes = 256 * 1024;  // larger envelopes get a too_large receipt
  uint64_t max_recipients = 64;             // addresses in Envelope.to, and resolved agencies
  uint64_t send_high_water_mark = 10000;    // messages queued per connection before "backlog"
  // Per sending agency (all its connections together): a token bucket of
  // rate_per_agency messages a second with bursts of burst_per_agency, and at
  // most max_in_flight_per_agency messages waiting for the same commit.
  // Over either: a `busy` receipt (resend later, same id). 0 = no limit.
  uint64_t rate_per_agency = 2000;
  uint64_t burst_per_agency = 4000;
  uint64_t max_in_flight_per_agency = 128;
};

struct StoreConfig {
  std::string backend = "sqlite";      // the storage backend (store::Store): sqlite (embedded) or postgresql
  std::string path;                    // SQLite file (WAL); required with sqlite
  // postgresql: a libpq connection URI (postgresql://user@host:port/db?sslmode=...); required.
  std::string url;
  std::string password_file;           // postgresql: the password, mode 0600; optional
  std::string password;                // read from password_file by LoadBrokerConfig; never logged
  std::string key_file;                // 64 hex digits, mode 0600; required
  // The case-key ring (store/case_keys.h, docs/audit.md "Erasure that
  // shreds"): made at the first start, mode 0600; back it up apart from the
  // data, like key_file. Default: "<key_file>.ring".
  std::string case_key_ring_file;
  uint64_t max_queue_per_recipient = 100000;  // then senders get queue_full
  uint64_t redelivery_timeout_ms = 30000;     // unacked deliveries go out again after this
  uint64_t delivery_window = 64;              // unacked deliveries in flight per recipient
  uint64_t max_batch = 256;                   // messages per group commit
  // postgresql: the lease that makes one of the brokers sharing the
  // database the active one (docs/operations.md, "High availability").
  // A broker that cannot renew for lease_ttl_ms steps down; renewing every
  // lease_renew_ms leaves room for a few failed renewals in between.
  uint64_t lease_ttl_ms = 5000;
  uint64_t lease_renew_ms = 1000;
};

struct LedgerConfig {
  std::string path;                 // append-only file; required
  std::string signing_key_file;     // Ed25519 private key (PEM, mode 0600); required
  uint64_t checkpoint_every = 1000;  // records between signed checkpoints
  uint64_t checkpoint_seconds = 10;  // and at least this often while records come in
};

// A broker CURVE key being retired: while agencies move to the new key, the
// old one is still served on its own endpoint (one endpoint has one key)
// until `until_ms`; then that endpoint closes and connections made through
// it are no longer served.
struct PreviousBrokerKey {
  std::string listen;
  std::string secret_key_file;
  int64_t until_ms = 0;  // Unix milliseconds (RFC 3339 in the file)
};

// Whose signatures an agency's policy file needs (docs/policies.md,
// "Signing"). Off (the default) is unsigned mode: for development and the
// first steps of a deployment, announced at start and in /readyz.
struct PolicySigningConfig {
  bool required = false;
  std::string pins_file;            // the pinned DPO keys; default: the ledger's path + ".dpo-pins"
  uint64_t vocabulary_quorum = 2;   // agency DPOs whose signatures the vocabulary needs
};

struct BrokerConfig {
  std::string listen = "tcp://127.0.0.1:7700";
  std::string secret_key_file;
  // Keys every pseudonym (per-recipient field pseudonyms, ledger case ids);
  // apart from the CURVE key so that rotating that one changes no pseudonym.
  std::string pseudonym_key_file;
  std::vector<PreviousBrokerKey> previous_keys;
  std::string policies_dir;
  uint64_t heartbeat_ms = 1000;  // ZMTP heartbeats; a peer silent for 3x this is dropped
  Limits limits;
  StoreConfig store;
  LedgerConfig ledger;
  PolicySigningConfig policy_signing;
  std::string admin_listen = "127.0.0.1:9464";  // HTTP /metrics /healthz /readyz; "" = off
  // Unix socket (mode 0600) for `liaison status` and `liaison queues`; "" = off.
  std::string admin_socket;
  LogOptions log;
};

// True if binding both endpoints would take the same address: the same ipc
// path (after normalising), or the same tcp port on the same host or where
// either host is a wildcard ("*", "0.0.0.0", "[::]").
bool SameBindAddress(std::string_view a, std::string_view b);

// Each broker key needs its own endpoint (a CURVE endpoint has one server
// key): checks `listen` against every previous key's, and those against each
// other. LoadBrokerConfig checks the file; call this again after command-line
// overrides.
Status CheckKeyEndpoints(const BrokerConfig& config);

// Reads and validates a config file. Every problem is reported at once, each
// as "file:line:col: 'key.path': what is wrong".
StatusOr<BrokerConfig> LoadBrokerConfig(const std::string& path);

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_CONFIG_BROKER_CONFIG_H_
