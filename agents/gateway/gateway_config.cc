#include "gateway_config.h"

#include <filesystem>
#include <vector>

#include "liaison/keys.h"
#include "liaison/yaml_util.h"

namespace liaison::gateway {
namespace {

std::string Resolve(const std::filesystem::path& base, const std::string& p) {
  if (p.empty() || std::filesystem::path(p).is_absolute()) return p;
  return (base / p).lexically_normal().string();
}

// https://HOST[:PORT][/PATH]. Only https: the webhook carries personal data.
bool ParseWebhookUrl(WebhookOptions* w) {
  constexpr std::string_view kScheme = "https://";
  if (w->url.rfind(kScheme, 0) != 0) return false;
  std::string rest = w->url.substr(kScheme.size());
  const auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  w->target = slash == std::string::npos ? "/" : rest.substr(slash);
  const auto colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']') == std::string::npos) {
    w->host = authority.substr(0, colon);
    w->port = authority.substr(colon + 1);
  } else {
    w->host = authority;
    w->port = "443";
  }
  if (w->host.empty() || w->port.empty() ||
      w->port.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  return true;
}

}  // namespace

StatusOr<GatewayConfig> LoadGatewayConfig(const std::string& path) {
  auto doc = LoadYamlFile(path);
  if (!doc.ok()) return doc.status();
  const YAML::Node& root = *doc;
  YamlReader r(path);
  GatewayConfig c;
  if (!r.ExpectMap(root, "", {"agent_config", "brokers", "listen", "tls", "token_file", "state_file", "state_key_file",
                              "max_body_bytes", "max_connections", "keep_receipts_days", "inbox",
                              "webhook", "log"})) {
    return r.ToStatus();
  }
  std::string agent_config, token_file;
  r.ReadString(root, "", "agent_config", &agent_config, /*required=*/true);
  r.ReadString(root, "", "listen", &c.listen);
  r.ReadString(root, "", "token_file", &token_file);
  r.ReadString(root, "", "state_file", &c.state_file, /*required=*/true);
  if (r.ReadString(root, "", "state_key_file", &c.state_key_file) && !c.state_key_file.empty() &&
      c.state_key_file == c.state_file) {
    r.Error(root["state_key_file"], "state_key_file",
            "is the state_file itself; name a key file of its own, kept apart from the state folder");
  }
  r.ReadUint(root, "", "max_body_bytes", 1024, 64 << 20, &c.max_body_bytes);
  r.ReadUint(root, "", "max_connections", 1, 10000, &c.max_connections);
  r.ReadUint(root, "", "keep_receipts_days", 1, 3650, &c.keep_receipts_days);
  // The gateway's own broker endpoints, replacing those of agent_config
  // (which still gives the keys and timers): an operator moving the
  // gateway between deployments edits one file, not the agent's.
  std::vector<std::string> brokers;
  if (const YAML::Node several = root["brokers"]) {
    if (r.ReadStringList(root, "", "brokers", &brokers) && brokers.empty()) {
      r.Error(several, "brokers", "the list is empty; name at least one broker endpoint, or remove `brokers` to "
                                  "use agent_config's");
    }
    for (size_t i = 0; i < brokers.size() && several.IsSequence(); ++i) {
      if (const std::string problem = BrokerEndpointProblem(brokers[i]); !problem.empty()) {
        r.Error(several[i], "brokers[" + std::to_string(i) + "]", problem);
      }
    }
  }
  if (c.listen.find(':') == std::string::npos) {
    r.Error(root["listen"], "listen", "expected HOST:PORT, e.g. 127.0.0.1:8443");
  }
  if (const YAML::Node tls = root["tls"]) {
    if (r.ExpectMap(tls, "tls", {"certificate_file", "private_key_file", "client_ca_file"})) {
      r.ReadString(tls, "tls", "certificate_file", &c.certificate_file, true);
      r.ReadString(tls, "tls", "private_key_file", &c.private_key_file, true);
      r.ReadString(tls, "tls", "client_ca_file", &c.client_ca_file);
    }
  } else {
    r.Error(root, "tls", "missing: the gateway serves only HTTPS (certificate_file, private_key_file)");
  }
  if (const YAML::Node inbox = root["inbox"]) {
    if (r.ExpectMap(inbox, "inbox", {"lease_seconds", "max_wait_seconds", "max_batch"})) {
      r.ReadUint(inbox, "inbox", "lease_seconds", 1, 86400, &c.inbox_lease_seconds);
      r.ReadUint(inbox, "inbox", "max_wait_seconds", 0, 3600, &c.inbox_max_wait_seconds);
      r.ReadUint(inbox, "inbox", "max_batch", 1, 1000, &c.inbox_max_batch);
    }
  }
  std::string webhook_token_file;
  if (const YAML::Node hook = root["webhook"]) {
    WebhookOptions w;
    if (r.ExpectMap(hook, "webhook", {"url", "ca_file", "token_file", "timeout_ms",
                                      "retry_initial_ms", "retry_max_ms", "max_attempts"})) {
      r.ReadString(hook, "webhook", "url", &w.url, true);
      r.ReadString(hook, "webhook", "ca_file", &w.ca_file);
      r.ReadString(hook, "webhook", "token_file", &webhook_token_file);
      r.ReadUint(hook, "webhook", "timeout_ms", 100, 600000, &w.timeout_ms);
      r.ReadUint(hook, "webhook", "retry_initial_ms", 10, 3600000, &w.retry_initial_ms);
      r.ReadUint(hook, "webhook", "retry_max_ms", 10, 86400000, &w.retry_max_ms);
      r.ReadUint(hook, "webhook", "max_attempts", 1, 1000, &w.max_attempts);
      if (!w.url.empty() && !ParseWebhookUrl(&w)) {
        r.Error(hook["url"], "webhook.url", "expected https://HOST[:PORT]/PATH (only https)");
      }
    }
    c.webhook = w;
  }
  if (const YAML::Node log = root["log"]) ReadLogOptions(r, log, "log", &c.log);
  if (!r.ok()) return r.ToStatus();

  const auto base = std::filesystem::absolute(path).parent_path();
  c.state_file = Resolve(base, c.state_file);
  // Beside the config, not beside the data: a backup of the state folder
  // must not carry the key that opens it.
  c.state_key_file = c.state_key_file.empty()
                         ? (base / (std::filesystem::path(path).stem().string() + ".state.key")).string()
                         : Resolve(base, c.state_key_file);
  c.certificate_file = Resolve(base, c.certificate_file);
  c.private_key_file = Resolve(base, c.private_key_file);
  c.client_ca_file = Resolve(base, c.client_ca_file);
  c.log.file = Resolve(base, c.log.file);
  if (token_file.empty() && c.client_ca_file.empty()) {
    return Status::InvalidArgument(
        path + ": neither token_file nor tls.client_ca_file is set; the gateway needs one to "
               "authenticate the agency's system (make a token with `liaison keygen --token FILE`)");
  }
  if (!token_file.empty()) {
    auto token = LoadTokenFile(Resolve(base, token_file));
    if (!token.ok()) return token.status().WithContext(path + ": token_file");
    c.token = *token;
  }
  if (c.webhook) {
    c.webhook->ca_file = Resolve(base, c.webhook->ca_file);
    if (!webhook_token_file.empty()) {
      auto token = LoadTokenFile(Resolve(base, webhook_token_file));
      if (!token.ok()) return token.status().WithContext(path + ": webhook.token_file");
      c.webhook->token = *token;
    }
  }
  for (const auto* file : {&c.certificate_file, &c.private_key_file, &c.client_ca_file}) {
    if (!file->empty() && !std::filesystem::exists(*file)) {
      return Status::NotFound(path + ": tls: " + *file + " does not exist");
    }
  }
  // The TLS private key is a secret like the CURVE key: owner-only.
  if (auto st = CheckSecretFile(c.private_key_file, "tls.private_key_file " + c.private_key_file,
                                "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out FILE");
      !st.ok()) {
    return st.WithContext(path);
  }
  auto agent = LoadAgentConfig(Resolve(base, agent_config));
  if (!agent.ok()) return agent.status().WithContext(path + ": agent_config");
  c.agent = std::move(*agent);
  if (!brokers.empty()) {
    c.agent.broker_endpoint.clear();
    c.agent.broker_endpoints = std::move(brokers);
  }
  return c;
}

}  // namespace liaison::gateway
