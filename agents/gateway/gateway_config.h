// liaison-gateway's configuration (deploy/config/gateway.yaml is the
// commented example). Loading validates everything and loads every key,
// certificate path and token it names, so that a bad file fails at start-up
// with file:line and never later.
#ifndef LIAISON_AGENTS_GATEWAY_GATEWAY_CONFIG_H_
#define LIAISON_AGENTS_GATEWAY_GATEWAY_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "liaison/agent.h"
#include "liaison/logging.h"
#include "liaison/status.h"

namespace liaison::gateway {

struct WebhookOptions {
  std::string url;     // https://HOST[:PORT]/PATH of the agency's system
  std::string host;    // parsed from url
  std::string port;    // parsed from url ("443" when absent)
  std::string target;  // parsed from url ("/" when absent)
  std::string ca_file;  // verify the webhook's certificate against it; empty = system CAs
  std::string token;    // sent as "Authorization: Bearer"; empty = none
  uint64_t timeout_ms = 10000;
  uint64_t retry_initial_ms = 500;
  uint64_t retry_max_ms = 60000;
  // Attempts per message before it becomes a dead letter (not posted again
  // until the gateway restarts; never acked, so the broker keeps it).
  uint64_t max_attempts = 20;
};

struct GatewayConfig {
  // From `agent_config` (the agency's agent.yaml); the gateway's own
  // `brokers:`, when set, replaces its broker endpoints.
  AgentOptions agent;
  std::string listen = "127.0.0.1:8443";
  std::string certificate_file;  // PEM, the gateway's TLS certificate (chain)
  std::string private_key_file;  // PEM
  std::string client_ca_file;    // set: clients must present a certificate it signed
  std::string token;             // bearer token clients must send; empty when client certificates alone
  std::string state_file;        // SQLite: accepted messages until the broker answers, receipts
  // The state file's key (liaison/case_vault.h; its ring "<key>.ring"), made
  // at first use. Default: beside this config file, "<config name>.state.key"
  // (e.g. /etc/liaison/gateway/exit-mombasa.state.key), away from the data.
  std::string state_key_file;
  uint64_t max_body_bytes = 1 << 20;
  uint64_t max_connections = 64;
  uint64_t keep_receipts_days = 30;
  uint64_t inbox_lease_seconds = 30;   // a message handed out is not handed out again for this long
  uint64_t inbox_max_wait_seconds = 60;
  uint64_t inbox_max_batch = 16;
  std::optional<WebhookOptions> webhook;
  LogOptions log;
};

// Reads and validates `path`; relative paths are relative to its folder.
// Every error names file:line:col and the key.
StatusOr<GatewayConfig> LoadGatewayConfig(const std::string& path);

}  // namespace liaison::gateway

#endif  // LIAISON_AGENTS_GATEWAY_GATEWAY_CONFIG_H_
