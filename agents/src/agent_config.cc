#include <filesystem>

#include "liaison/agent.h"
#include "liaison/yaml_util.h"

namespace liaison {

StatusOr<AgentOptions> LoadAgentConfig(const std::string& path) {
  auto doc = LoadYamlFile(path);
  if (!doc.ok()) return doc.status();
  YamlReader r(path);
  if (!r.ExpectMap(*doc, "", {"broker", "broker_public_key_file", "secret_key_file", "role",
                              "receipt_timeout_ms", "resend_interval_ms", "heartbeat_ms",
                              "outbox"})) {
    return r.ToStatus();
  }
  AgentOptions o;
  std::string broker_key_file, secret_key_file, role = "sender";
  uint64_t receipt_ms = o.receipt_timeout.count(), resend_ms = o.resend_interval.count(),
           heartbeat_ms = o.heartbeat.count();
  r.ReadString(*doc, "", "broker", &o.broker_endpoint, true);
  r.ReadString(*doc, "", "broker_public_key_file", &broker_key_file, true);
  r.ReadString(*doc, "", "secret_key_file", &secret_key_file, true);
  r.ReadChoice(*doc, "", "role", {"sender", "receiver"}, &role);
  r.ReadUint(*doc, "", "receipt_timeout_ms", 100, 3600000, &receipt_ms);
  r.ReadUint(*doc, "", "resend_interval_ms", 50, 3600000, &resend_ms);
  r.ReadUint(*doc, "", "heartbeat_ms", 100, 60000, &heartbeat_ms);
  r.ReadString(*doc, "", "outbox", &o.outbox);
  if (!r.ok()) return r.ToStatus();

  const auto base = std::filesystem::absolute(path).parent_path();
  auto resolve = [&](const std::string& p) {
    return std::filesystem::path(p).is_absolute() ? p : (base / p).lexically_normal().string();
  };
  auto broker_key = LoadPublicKeyFile(resolve(broker_key_file));
  if (!broker_key.ok()) return broker_key.status().WithContext(path + ": broker_public_key_file");
  auto keys = LoadSecretKeyFile(resolve(secret_key_file));
  if (!keys.ok()) return keys.status().WithContext(path + ": secret_key_file");
  if (!o.outbox.empty()) o.outbox = resolve(o.outbox);
  o.broker_public_key = *broker_key;
  o.keys = *keys;
  o.role = role == "receiver" ? wire::Role::receiver : wire::Role::sender;
  o.receipt_timeout = std::chrono::milliseconds(receipt_ms);
  o.resend_interval = std::chrono::milliseconds(resend_ms);
  o.heartbeat = std::chrono::milliseconds(heartbeat_ms);
  return o;
}

}  // namespace liaison
