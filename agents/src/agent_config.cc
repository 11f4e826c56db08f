#include <filesystem>

#include "liaison/agent.h"
#include "liaison/yaml_util.h"

namespace liaison {

std::string BrokerEndpointProblem(const std::string& endpoint) {
  constexpr std::string_view kTcp = "tcp://", kIpc = "ipc://";
  const std::string expected = "expected tcp://HOST:PORT (e.g. tcp://broker-1.example:7700) or ipc://PATH";
  if (endpoint.rfind(kIpc, 0) == 0) {
    return endpoint.size() > kIpc.size() ? "" : expected;
  }
  if (endpoint.rfind(kTcp, 0) != 0) return expected;
  const std::string rest = endpoint.substr(kTcp.size());
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) return expected;
  const std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (host.find_first_of("*/ ") != std::string::npos ||
      (host.find(':') != std::string::npos && (host.front() != '[' || host.back() != ']'))) {
    return expected + "; the host is not a name or address";
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) == 0 || std::stoul(port) > 65535) {
    return expected + "; the port must be 1 to 65535";
  }
  return "";
}

StatusOr<AgentOptions> LoadAgentConfig(const std::string& path) {
  auto doc = LoadYamlFile(path);
  if (!doc.ok()) return doc.status();
  YamlReader r(path);
  if (!r.ExpectMap(*doc, "", {"broker", "brokers", "broker_public_key_file", "secret_key_file", "role",
                              "receipt_timeout_ms", "resend_interval_ms", "heartbeat_ms",
                              "connect_timeout_ms", "welcome_timeout_ms", "silence_timeout_ms",
                              "outbox", "outbox_key_file"})) {
    return r.ToStatus();
  }
  AgentOptions o;
  std::string broker_key_file, secret_key_file, role = "sender";
  uint64_t receipt_ms = o.receipt_timeout.count(), resend_ms = o.resend_interval.count(),
           heartbeat_ms = o.heartbeat.count(), connect_ms = o.connect_timeout.count(),
           welcome_ms = o.welcome_timeout.count(), silence_ms = o.silence_timeout.count();
  // One broker (`broker:`) or the brokers of a high-availability deployment
  // (`brokers:`), never both: which would win is not obvious to a reader.
  const YAML::Node one = (*doc)["broker"], several = (*doc)["brokers"];
  if (one && several) {
    r.Error(several, "brokers",
            "both `broker` and `brokers` are set; keep one (`brokers: [ENDPOINT, ...]` for several)");
  } else if (several) {
    if (r.ReadStringList(*doc, "", "brokers", &o.broker_endpoints) && o.broker_endpoints.empty()) {
      r.Error(several, "brokers", "the list is empty; name at least one broker endpoint");
    }
    for (size_t i = 0; i < o.broker_endpoints.size() && several.IsSequence(); ++i) {
      if (const std::string problem = BrokerEndpointProblem(o.broker_endpoints[i]); !problem.empty()) {
        r.Error(several[i], "brokers[" + std::to_string(i) + "]", problem);
      }
    }
  } else if (!one) {
    r.Error(*doc, "broker", "missing: set `broker: ENDPOINT`, or `brokers: [ENDPOINT, ...]`");
  } else if (r.ReadString(*doc, "", "broker", &o.broker_endpoint)) {
    if (const std::string problem = BrokerEndpointProblem(o.broker_endpoint); !problem.empty()) {
      r.Error(one, "broker", problem);
    }
  }
  r.ReadString(*doc, "", "broker_public_key_file", &broker_key_file, true);
  r.ReadString(*doc, "", "secret_key_file", &secret_key_file, true);
  r.ReadChoice(*doc, "", "role", {"sender", "receiver"}, &role);
  r.ReadUint(*doc, "", "receipt_timeout_ms", 100, 3600000, &receipt_ms);
  r.ReadUint(*doc, "", "resend_interval_ms", 50, 3600000, &resend_ms);
  r.ReadUint(*doc, "", "heartbeat_ms", 100, 60000, &heartbeat_ms);
  r.ReadUint(*doc, "", "connect_timeout_ms", 100, 600000, &connect_ms);
  r.ReadUint(*doc, "", "welcome_timeout_ms", 100, 600000, &welcome_ms);
  r.ReadUint(*doc, "", "silence_timeout_ms", 100, 600000, &silence_ms);
  r.ReadString(*doc, "", "outbox", &o.outbox);
  r.ReadString(*doc, "", "outbox_key_file", &o.outbox_key_file);
  if (!o.outbox_key_file.empty() && o.outbox.empty()) {
    r.Error((*doc)["outbox_key_file"], "outbox_key_file",
            "set, but there is no `outbox`; name the outbox file, or remove outbox_key_file");
  }
  if (!r.ok()) return r.ToStatus();

  const auto base = std::filesystem::absolute(path).parent_path();
  auto resolve = [&](const std::string& p) {
    return std::filesystem::path(p).is_absolute() ? p : (base / p).lexically_normal().string();
  };
  auto broker_key = LoadPublicKeyFile(resolve(broker_key_file));
  if (!broker_key.ok()) return broker_key.status().WithContext(path + ": broker_public_key_file");
  auto keys = LoadSecretKeyFile(resolve(secret_key_file));
  if (!keys.ok()) return keys.status().WithContext(path + ": secret_key_file");
  if (!o.outbox.empty()) {
    o.outbox = resolve(o.outbox);
    // The outbox's key sits with the agency's keys, not with the outbox, so
    // that a backup of the data never carries what opens it; one key per
    // outbox file (two outboxes sharing a ring would shred each other).
    o.outbox_key_file = o.outbox_key_file.empty()
                            ? (std::filesystem::path(resolve(secret_key_file)).parent_path() /
                               (std::filesystem::path(o.outbox).filename().string() + ".key"))
                                  .string()
                            : resolve(o.outbox_key_file);
  }
  o.broker_public_key = *broker_key;
  o.keys = *keys;
  o.role = role == "receiver" ? wire::Role::receiver : wire::Role::sender;
  o.receipt_timeout = std::chrono::milliseconds(receipt_ms);
  o.resend_interval = std::chrono::milliseconds(resend_ms);
  o.heartbeat = std::chrono::milliseconds(heartbeat_ms);
  o.connect_timeout = std::chrono::milliseconds(connect_ms);
  o.welcome_timeout = std::chrono::milliseconds(welcome_ms);
  o.silence_timeout = std::chrono::milliseconds(silence_ms);
  return o;
}

}  // namespace liaison
