#include "config/broker_config.h"

#include <filesystem>
#include <fstream>

#include "liaison/keys.h"
#include "liaison/wire.h"
#include "liaison/yaml_util.h"

namespace liaison::broker {
namespace {

std::string Resolve(const std::filesystem::path& base, const std::string& path) {
  if (path.empty() || std::filesystem::path(path).is_absolute()) return path;
  return (base / path).lexically_normal().string();
}

// store: {backend: postgresql, url, password_file}. The password is read
// here, so that a missing or readable-by-others file is reported at its
// line in broker.yaml; it is never part of an error or a log.
void ReadPostgresStore(YamlReader& r, const YAML::Node& store, const std::filesystem::path& base,
                       StoreConfig* out) {
  if (store["path"]) {
    r.Error(store["path"], "store.path",
            "only for backend: sqlite; a postgresql store is at store.url (remove path, or use backend: sqlite)");
  }
  if (r.ReadString(store, "store", "url", &out->url, true)) {
    if (out->url.rfind("postgresql://", 0) != 0 && out->url.rfind("postgres://", 0) != 0) {
      r.Error(store["url"], "store.url",
              "expected a postgresql:// URL, e.g. postgresql://liaison@db.example:5432/liaison?sslmode=verify-full");
    }
  }
  if (!r.ReadString(store, "store", "password_file", &out->password_file)) return;
  out->password_file = Resolve(base, out->password_file);
  const std::string name = "store.password_file " + out->password_file;
  if (Status st = CheckSecretFile(out->password_file, name, "printf '%s\\n' PASSWORD > FILE; chmod 600 FILE");
      !st.ok()) {
    r.Error(store["password_file"], "store.password_file", st.message());
    return;
  }
  std::ifstream in(out->password_file);
  std::string line;
  if (!in || !std::getline(in, line)) {
    r.Error(store["password_file"], "store.password_file",
            "cannot read " + out->password_file + " (it holds the database password on its first line)");
    return;
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) {
    r.Error(store["password_file"], "store.password_file",
            out->password_file + " is empty: its first line is the database password");
    return;
  }
  out->password = line;
}

// store.lease_ttl_ms and lease_renew_ms: only a postgresql store has a
// lease. Renewing at most every third of the TTL leaves two renewals that
// may fail (a slow query, a blip) before the lease runs out.
void ReadLease(YamlReader& r, const YAML::Node& store, StoreConfig* out) {
  if (out->backend != "postgresql") {
    for (const char* key : {"lease_ttl_ms", "lease_renew_ms"}) {
      if (store[key]) {
        r.Error(store[key], std::string("store.") + key,
                "only for backend: postgresql (brokers share a lease only on a PostgreSQL store)");
      }
    }
    return;
  }
  if (!r.ReadUint(store, "store", "lease_ttl_ms", 1000, 600000, &out->lease_ttl_ms) ||
      !r.ReadUint(store, "store", "lease_renew_ms", 100, 200000, &out->lease_renew_ms)) {
    return;
  }
  if (out->lease_renew_ms * 3 > out->lease_ttl_ms) {
    const char* key = store["lease_renew_ms"] ? "lease_renew_ms" : "lease_ttl_ms";
    r.Error(store[key], std::string("store.") + key,
            "lease_renew_ms (" + std::to_string(out->lease_renew_ms) + ") must be at most a third of lease_ttl_ms (" +
                std::to_string(out->lease_ttl_ms) +
                "), so that a broker renews at least three times per lease; e.g. lease_ttl_ms: 5000, "
                "lease_renew_ms: 1000");
  }
}

}  // namespace

bool SameBindAddress(std::string_view a, std::string_view b) {
  auto split = [](std::string_view e, std::string_view* scheme, std::string_view* rest) {
    const size_t sep = e.find("://");
    *scheme = sep == std::string_view::npos ? std::string_view() : e.substr(0, sep);
    *rest = sep == std::string_view::npos ? e : e.substr(sep + 3);
  };
  std::string_view scheme_a, rest_a, scheme_b, rest_b;
  split(a, &scheme_a, &rest_a);
  split(b, &scheme_b, &rest_b);
  if (scheme_a != scheme_b) return false;
  if (scheme_a == "ipc") {
    namespace fs = std::filesystem;
    return fs::absolute(fs::path(rest_a)).lexically_normal() == fs::absolute(fs::path(rest_b)).lexically_normal();
  }
  if (scheme_a != "tcp") return a == b;
  const size_t colon_a = rest_a.rfind(':'), colon_b = rest_b.rfind(':');
  if (colon_a == std::string_view::npos || colon_b == std::string_view::npos) return a == b;
  const std::string_view host_a = rest_a.substr(0, colon_a), host_b = rest_b.substr(0, colon_b);
  const std::string_view port_a = rest_a.substr(colon_a + 1), port_b = rest_b.substr(colon_b + 1);
  if (port_a != port_b || port_a == "*" || port_a == "0") return false;  // ephemeral ports differ
  auto wildcard = [](std::string_view h) { return h == "*" || h == "0.0.0.0" || h == "[::]" || h == "::"; };
  return host_a == host_b || wildcard(host_a) || wildcard(host_b);
}

Status CheckKeyEndpoints(const BrokerConfig& config) {
  std::vector<const std::string*> endpoints = {&config.listen};
  for (const auto& key : config.previous_keys) endpoints.push_back(&key.listen);
  for (size_t i = 0; i < endpoints.size(); ++i) {
    for (size_t j = i + 1; j < endpoints.size(); ++j) {
      if (SameBindAddress(*endpoints[i], *endpoints[j])) {
        return Status::InvalidArgument(
            "previous_keys[" + std::to_string(j - 1) + "].listen " + *endpoints[j] + " takes the same address as " +
            (i == 0 ? "listen " : "previous_keys[" + std::to_string(i - 1) + "].listen ") + *endpoints[i] +
            "; each broker key needs its own endpoint (the CURVE handshake has one server key per endpoint)");
      }
    }
  }
  return Status::Ok();
}

StatusOr<BrokerConfig> LoadBrokerConfig(const std::string& path) {
  auto doc = LoadYamlFile(path);
  if (!doc.ok()) return doc.status();
  YamlReader r(path);
  const auto base = std::filesystem::absolute(path).parent_path();
  BrokerConfig c;
  const YAML::Node& root = *doc;
  if (!r.ExpectMap(root, "", {"listen", "secret_key_file", "pseudonym_key_file", "previous_keys",
                              "policies_dir", "heartbeat_ms",
                              "limits", "store", "ledger", "policy_signing", "admin", "log"})) {
    if (!root.IsMap()) return r.ToStatus();
  }
  r.ReadString(root, "", "listen", &c.listen);
  r.ReadString(root, "", "secret_key_file", &c.secret_key_file, /*required=*/true);
  if (root.IsMap() && !root["pseudonym_key_file"]) {
    r.Error(root, "",
            "missing required key 'pseudonym_key_file' (it keys every pseudonym; make it with "
            "`liaison keygen --pseudonym-key FILE`, and add `--from-broker-key BROKER.key` to keep "
            "the pseudonyms a broker before 0.2 derived from its CURVE key)");
  }
  r.ReadString(root, "", "pseudonym_key_file", &c.pseudonym_key_file);
  r.ReadString(root, "", "policies_dir", &c.policies_dir, /*required=*/true);
  r.ReadUint(root, "", "heartbeat_ms", 100, 60000, &c.heartbeat_ms);
  auto check_endpoint = [&r](const YAML::Node& node, const std::string& path, const std::string& endpoint) {
    if (endpoint.rfind("tcp://", 0) != 0 && endpoint.rfind("ipc://", 0) != 0) {
      r.Error(node, path, "expected a tcp:// or ipc:// endpoint, e.g. tcp://127.0.0.1:7700");
    }
  };
  check_endpoint(root["listen"], "listen", c.listen);

  if (const YAML::Node previous = root["previous_keys"]) {
    if (!previous.IsSequence()) {
      r.Error(previous, "previous_keys",
              "expected a list of {listen, secret_key_file, until}: the broker keys being retired");
    } else {
      for (size_t i = 0; i < previous.size(); ++i) {
        const YAML::Node item = previous[i];
        const std::string at = "previous_keys[" + std::to_string(i) + "]";
        if (!r.ExpectMap(item, at, {"listen", "secret_key_file", "until"})) continue;
        PreviousBrokerKey key;
        std::string until;
        const bool has_listen = r.ReadString(item, at, "listen", &key.listen, true);
        r.ReadString(item, at, "secret_key_file", &key.secret_key_file, true);
        if (r.ReadString(item, at, "until", &until, true)) {
          if (auto ms = wire::ParseRfc3339Millis(until)) {
            key.until_ms = *ms;
          } else {
            r.Error(item["until"], at + ".until",
                    "expected an RFC 3339 time (e.g. 2027-01-31T00:00:00Z): when the old key stops working");
          }
        }
        if (has_listen) {
          check_endpoint(item["listen"], at + ".listen", key.listen);
          bool taken = SameBindAddress(key.listen, c.listen);
          for (const auto& other : c.previous_keys) taken = taken || SameBindAddress(other.listen, key.listen);
          if (taken) {
            r.Error(item["listen"], at + ".listen",
                    "this endpoint is already used by another key; each broker key needs its own "
                    "endpoint (the CURVE handshake has one server key per endpoint)");
          }
        }
        c.previous_keys.push_back(std::move(key));
      }
    }
  }

  if (const YAML::Node limits = root["limits"]) {
    if (r.ExpectMap(limits, "limits", {"max_message_bytes", "max_recipients", "send_high_water_mark",
                                       "rate_per_agency", "burst_per_agency",
                                       "max_in_flight_per_agency"})) {
      r.ReadUint(limits, "limits", "rate_per_agency", 0, 10000000, &c.limits.rate_per_agency);
      r.ReadUint(limits, "limits", "burst_per_agency", 1, 100000000, &c.limits.burst_per_agency);
      r.ReadUint(limits, "limits", "max_in_flight_per_agency", 0, 1000000,
                 &c.limits.max_in_flight_per_agency);
      r.ReadUint(limits, "limits", "max_message_bytes", 1024, 64 * 1024 * 1024,
                 &c.limits.max_message_bytes);
      r.ReadUint(limits, "limits", "max_recipients", 1, 100000, &c.limits.max_recipients);
      r.ReadUint(limits, "limits", "send_high_water_mark", 1, 10000000,
                 &c.limits.send_high_water_mark);
    }
  }

  if (const YAML::Node store = root["store"]) {
    if (r.ExpectMap(store, "store", {"backend", "path", "url", "password_file", "key_file",
                                     "case_key_ring_file", "max_queue_per_recipient", "redelivery_timeout_ms", "delivery_window",
                                     "max_batch", "lease_ttl_ms", "lease_renew_ms"})) {
      // The backends this build has (store::Store is the interface they
      // implement); naming another is a configuration error, not a silent
      // fallback.
      r.ReadChoice(store, "store", "backend", {"sqlite", "postgresql"}, &c.store.backend);
      if (c.store.backend == "postgresql") {
        ReadPostgresStore(r, store, base, &c.store);
      } else {
        r.ReadString(store, "store", "path", &c.store.path, true);
        for (const char* key : {"url", "password_file"}) {
          if (store[key]) {
            r.Error(store[key], std::string("store.") + key,
                    "only for backend: postgresql (this store is the SQLite file at store.path)");
          }
        }
      }
      r.ReadString(store, "store", "key_file", &c.store.key_file, true);
      r.ReadString(store, "store", "case_key_ring_file", &c.store.case_key_ring_file);
      r.ReadUint(store, "store", "max_queue_per_recipient", 1, 100000000, &c.store.max_queue_per_recipient);
      r.ReadUint(store, "store", "redelivery_timeout_ms", 100, 86400000, &c.store.redelivery_timeout_ms);
      r.ReadUint(store, "store", "delivery_window", 1, 10000, &c.store.delivery_window);
      r.ReadUint(store, "store", "max_batch", 1, 100000, &c.store.max_batch);
      ReadLease(r, store, &c.store);
    }
  } else {
    r.Error(root, "", "missing required key 'store' (path and key_file of the durable store)");
  }

  if (const YAML::Node ledger = root["ledger"]) {
    if (r.ExpectMap(ledger, "ledger", {"path", "signing_key_file", "checkpoint_every", "checkpoint_seconds"})) {
      r.ReadString(ledger, "ledger", "path", &c.ledger.path, true);
      r.ReadString(ledger, "ledger", "signing_key_file", &c.ledger.signing_key_file, true);
      r.ReadUint(ledger, "ledger", "checkpoint_every", 1, 1000000, &c.ledger.checkpoint_every);
      r.ReadUint(ledger, "ledger", "checkpoint_seconds", 1, 86400, &c.ledger.checkpoint_seconds);
    }
  } else {
    r.Error(root, "", "missing required key 'ledger' (path and signing_key_file of the disclosure ledger)");
  }

  if (const YAML::Node signing = root["policy_signing"]) {
    if (r.ExpectMap(signing, "policy_signing", {"required", "pins_file", "vocabulary_quorum"})) {
      std::string required = "false";
      r.ReadChoice(signing, "policy_signing", "required", {"true", "false"}, &required);
      c.policy_signing.required = required == "true";
      r.ReadString(signing, "policy_signing", "pins_file", &c.policy_signing.pins_file);
      r.ReadUint(signing, "policy_signing", "vocabulary_quorum", 1, 1000, &c.policy_signing.vocabulary_quorum);
    }
  }

  if (const YAML::Node admin = root["admin"]) {
    if (r.ExpectMap(admin, "admin", {"listen", "socket"})) {
      r.ReadString(admin, "admin", "listen", &c.admin_listen);
      r.ReadString(admin, "admin", "socket", &c.admin_socket);
    }
  }

  if (const YAML::Node log = root["log"]) ReadLogOptions(r, log, "log", &c.log);
  if (!r.ok()) return r.ToStatus();

  c.secret_key_file = Resolve(base, c.secret_key_file);
  c.pseudonym_key_file = Resolve(base, c.pseudonym_key_file);
  for (auto& key : c.previous_keys) key.secret_key_file = Resolve(base, key.secret_key_file);
  c.policies_dir = Resolve(base, c.policies_dir);
  c.log.file = Resolve(base, c.log.file);
  // A postgresql store has no file (store.path is refused with it).
  if (c.store.backend == "sqlite") c.store.path = Resolve(base, c.store.path);
  c.store.key_file = Resolve(base, c.store.key_file);
  // Beside the store key (store::DefaultCaseKeyRingPath).
  c.store.case_key_ring_file = c.store.case_key_ring_file.empty() ? c.store.key_file + ".ring"
                                                                  : Resolve(base, c.store.case_key_ring_file);
  c.ledger.path = Resolve(base, c.ledger.path);
  c.admin_socket = Resolve(base, c.admin_socket);
  c.ledger.signing_key_file = Resolve(base, c.ledger.signing_key_file);
  c.policy_signing.pins_file = c.policy_signing.pins_file.empty() ? c.ledger.path + ".dpo-pins"
                                                                  : Resolve(base, c.policy_signing.pins_file);
  return c;
}

}  // namespace liaison::broker
