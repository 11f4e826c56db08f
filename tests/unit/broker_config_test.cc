#include "config/broker_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "testing/fixtures.h"

namespace liaison::broker {
namespace {

using testing::TempDir;
using testing::WriteText;

TEST(BrokerConfigTest, ReadsAGoodConfigAndResolvesPathsFromItsFolder) {
  TempDir dir;
  WriteText(dir.file("etc/broker.yaml"),
            "listen: tcp://127.0.0.1:7701\n"
            "secret_key_file: keys/broker.key\n"
            "pseudonym_key_file: keys/pseudonym.key\n"
            "previous_keys:\n"
            "  - listen: tcp://127.0.0.1:7700\n"
            "    secret_key_file: keys/broker-2026.key\n"
            "    until: 2027-01-31T00:00:00Z\n"
            "policies_dir: /srv/policies\n"
            "heartbeat_ms: 500\n"
            "store:\n  path: state/liaison.db\n  key_file: keys/store.key\n"
            "ledger:\n  path: state/ledger.log\n  signing_key_file: keys/ledger.key\n"
            "limits:\n  max_message_bytes: 4096\n  max_recipients: 3\n"
            "log:\n  level: debug\n  format: json\n  file: log/broker.log\n  console: false\n");
  auto c = LoadBrokerConfig(dir.file("etc/broker.yaml"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ("tcp://127.0.0.1:7701", c->listen);
  EXPECT_EQ(dir.file("etc/keys/broker.key"), c->secret_key_file);
  EXPECT_EQ(dir.file("etc/keys/pseudonym.key"), c->pseudonym_key_file);
  ASSERT_EQ(1u, c->previous_keys.size());
  EXPECT_EQ("tcp://127.0.0.1:7700", c->previous_keys[0].listen);
  EXPECT_EQ(dir.file("etc/keys/broker-2026.key"), c->previous_keys[0].secret_key_file);
  EXPECT_EQ(1801353600000, c->previous_keys[0].until_ms);  // 2027-01-31T00:00:00Z
  EXPECT_EQ("/srv/policies", c->policies_dir);
  EXPECT_EQ(500u, c->heartbeat_ms);
  EXPECT_EQ(4096u, c->limits.max_message_bytes);
  EXPECT_EQ(3u, c->limits.max_recipients);
  EXPECT_EQ(10000u, c->limits.send_high_water_mark);  // default kept
  EXPECT_EQ(dir.file("etc/state/liaison.db"), c->store.path);
  EXPECT_EQ("sqlite", c->store.backend);  // the default
  EXPECT_EQ(30000u, c->store.redelivery_timeout_ms);
  EXPECT_EQ("debug", c->log.level);
  EXPECT_EQ("json", c->log.format);
  EXPECT_FALSE(c->log.console);
  EXPECT_EQ(dir.file("etc/log/broker.log"), c->log.file);
}

TEST(BrokerConfigTest, ReadsAPostgresqlStoreAndItsPasswordFile) {
  TempDir dir;
  WriteText(dir.file("etc/keys/db.password"), "s3cret-Pw\n");
  ASSERT_EQ(0, ::chmod(dir.file("etc/keys/db.password").c_str(), 0600));
  WriteText(dir.file("etc/broker.yaml"),
            "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
            "store:\n  backend: postgresql\n"
            "  url: postgresql://liaison@db.example:5432/liaison?sslmode=verify-full\n"
            "  password_file: keys/db.password\n  key_file: keys/store.key\n"
            "ledger: {path: l, signing_key_file: k}\n");
  auto c = LoadBrokerConfig(dir.file("etc/broker.yaml"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ("postgresql", c->store.backend);
  EXPECT_EQ("postgresql://liaison@db.example:5432/liaison?sslmode=verify-full", c->store.url);
  EXPECT_EQ(dir.file("etc/keys/db.password"), c->store.password_file);
  EXPECT_EQ("s3cret-Pw", c->store.password);
  EXPECT_EQ("", c->store.path);  // no file: nothing for --check-config to check the mode of
  EXPECT_EQ(5000u, c->store.lease_ttl_ms);
  EXPECT_EQ(1000u, c->store.lease_renew_ms);
}

TEST(BrokerConfigTest, APasswordFileReadableByOthersIsRefusedWithoutQuotingIt) {
  TempDir dir;
  WriteText(dir.file("db.password"), "s3cret-Pw\n");
  ASSERT_EQ(0, ::chmod(dir.file("db.password").c_str(), 0644));
  WriteText(dir.file("broker.yaml"),
            "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
            "store: {backend: postgresql, url: \"postgresql://liaison@127.0.0.1/liaison\", "
            "password_file: db.password, key_file: k}\nledger: {path: l, signing_key_file: k}\n");
  auto c = LoadBrokerConfig(dir.file("broker.yaml"));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string::npos, c.status().message().find("store.password_file")) << c.status().message();
  EXPECT_EQ(std::string::npos, c.status().message().find("s3cret")) << c.status().message();
}

struct BadConfigCase {
  const char* name;
  const char* yaml;
  std::vector<const char*> expected;  // substrings of the error
};

class BadConfigTest : public ::testing::TestWithParam<BadConfigCase> {};

TEST_P(BadConfigTest, NamesTheKeyAndLine) {
  TempDir dir;
  WriteText(dir.file("broker.yaml"), GetParam().yaml);
  auto c = LoadBrokerConfig(dir.file("broker.yaml"));
  ASSERT_FALSE(c.ok());
  for (const char* part : GetParam().expected) {
    EXPECT_NE(std::string::npos, c.status().message().find(part))
        << "missing '" << part << "' in: " << c.status().message();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfigTest,
    ::testing::Values(
        BadConfigCase{"unknown_key",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\nlistn: tcp://127.0.0.1:1\n",
                      {"broker.yaml:6:1", "unknown key 'listn'", "did you mean 'listen'"}},
        BadConfigCase{"nested_unknown_key",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\nlimits:\n  max_mesage_bytes: 5\n",
                      {"broker.yaml:7:3", "limits.max_mesage_bytes",
                       "did you mean 'limits.max_message_bytes'"}},
        BadConfigCase{"not_a_number",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\nlimits:\n  max_message_bytes: lots\n",
                      {"broker.yaml:7:22", "limits.max_message_bytes", "whole number"}},
        BadConfigCase{"out_of_range",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\nheartbeat_ms: 5\n",
                      {"broker.yaml:6:15", "heartbeat_ms", "from 100 to 60000"}},
        BadConfigCase{"missing_required", "listen: tcp://127.0.0.1:1\n",
                      {"missing required key 'secret_key_file'",
                       "missing required key 'policies_dir'",
                       "missing required key 'pseudonym_key_file'", "liaison keygen --pseudonym-key",
                       "--from-broker-key"}},
        BadConfigCase{"previous_key_without_end",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\n"
                      "previous_keys:\n  - listen: tcp://127.0.0.1:7701\n    secret_key_file: old.key\n    until: soon\n",
                      {"broker.yaml:9:12", "previous_keys[0].until", "RFC 3339"}},
        BadConfigCase{"previous_key_on_the_current_endpoint",
                      "listen: tcp://127.0.0.1:7700\nsecret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\n"
                      "previous_keys:\n  - {listen: tcp://127.0.0.1:7700, secret_key_file: old.key, until: 2027-01-01T00:00:00Z}\n",
                      {"broker.yaml:8:14", "previous_keys[0].listen", "its own endpoint"}},
        BadConfigCase{"two_previous_keys_on_one_port",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\n"
                      "previous_keys:\n  - {listen: tcp://0.0.0.0:7701, secret_key_file: a.key, until: 2027-01-01T00:00:00Z}\n"
                      "  - {listen: tcp://127.0.0.1:7701, secret_key_file: b.key, until: 2027-02-01T00:00:00Z}\n",
                      {"broker.yaml:8:14", "previous_keys[1].listen", "its own endpoint"}},
        BadConfigCase{"previous_key_incomplete",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\n"
                      "previous_keys:\n  - {listen: tcp://127.0.0.1:7701, until: 2027-01-01T00:00:00Z}\n",
                      {"broker.yaml:7:5", "missing required key 'previous_keys[0].secret_key_file'"}},
        BadConfigCase{"postgresql_without_url",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {backend: postgresql, key_file: k}\nledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4", "store.url"}},
        BadConfigCase{"postgresql_with_a_path",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {backend: postgresql, url: \"postgresql://h/d\", path: s, key_file: k}\n"
                      "ledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4", "store.path", "only for backend: sqlite"}},
        BadConfigCase{"postgresql_url_not_a_url",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {backend: postgresql, url: \"mysql://h/d\", key_file: k}\n"
                      "ledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4", "store.url", "postgresql://"}},
        BadConfigCase{"lease_on_sqlite",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {path: s, key_file: k, lease_ttl_ms: 5000}\n"
                      "ledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4", "store.lease_ttl_ms", "only for backend: postgresql"}},
        BadConfigCase{"lease_ttl_too_short",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {backend: postgresql, url: \"postgresql://h/d\", key_file: k, lease_ttl_ms: 50}\n"
                      "ledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4", "store.lease_ttl_ms", "from 1000 to 600000"}},
        BadConfigCase{"lease_renewed_too_rarely",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {backend: postgresql, url: \"postgresql://h/d\", key_file: k, lease_ttl_ms: 5000, "
                      "lease_renew_ms: 2000}\n"
                      "ledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4", "store.lease_renew_ms", "at most a third of lease_ttl_ms (5000)"}},
        BadConfigCase{"lease_ttl_below_the_default_renewal",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {backend: postgresql, url: \"postgresql://h/d\", key_file: k, lease_ttl_ms: 2000}\n"
                      "ledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4", "store.lease_ttl_ms", "lease_renew_ms (1000)"}},
        BadConfigCase{"sqlite_with_a_url",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {path: s, url: \"postgresql://h/d\", key_file: k}\n"
                      "ledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4", "store.url", "only for backend: postgresql"}},
        BadConfigCase{"unknown_store_backend",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\n"
                      "store: {backend: postgres, path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\n",
                      {"broker.yaml:4:18", "store.backend", "'postgres' is not one of: sqlite, postgresql"}},
        BadConfigCase{"bad_choice",
                      "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\nlog:\n  level: loud\n",
                      {"broker.yaml:7:10", "log.level", "'loud' is not one of"}},
        BadConfigCase{"bad_endpoint", "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\nlisten: 7700\n",
                      {"broker.yaml:6:9", "tcp://"}},
        BadConfigCase{"syntax_error", "secret_key_file: k\npolicies_dir: [p\n",
                      {"broker.yaml:", "YAML syntax error"}},
        BadConfigCase{"not_a_map", "- a\n- b\n", {"expected a map"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(BrokerConfigTest, EndpointsThatTakeTheSameAddressAreFound) {
  EXPECT_TRUE(SameBindAddress("tcp://127.0.0.1:7700", "tcp://127.0.0.1:7700"));
  EXPECT_TRUE(SameBindAddress("tcp://0.0.0.0:7700", "tcp://10.0.0.5:7700"));
  EXPECT_TRUE(SameBindAddress("tcp://127.0.0.1:7700", "tcp://*:7700"));
  EXPECT_TRUE(SameBindAddress("ipc://run/b.sock", "ipc://./run/../run/b.sock"));
  EXPECT_FALSE(SameBindAddress("tcp://127.0.0.1:7700", "tcp://127.0.0.1:7701"));
  EXPECT_FALSE(SameBindAddress("tcp://127.0.0.1:7700", "tcp://10.0.0.5:7700"));
  EXPECT_FALSE(SameBindAddress("tcp://127.0.0.1:*", "tcp://127.0.0.1:*"));  // two free ports
  EXPECT_FALSE(SameBindAddress("ipc://a.sock", "tcp://127.0.0.1:7700"));

  // The command line can move `listen` onto a previous key's endpoint.
  BrokerConfig c;
  c.listen = "tcp://127.0.0.1:7701";
  c.previous_keys.push_back({"tcp://127.0.0.1:7700", "old.key", 0});
  EXPECT_TRUE(CheckKeyEndpoints(c).ok());
  c.listen = "tcp://*:7700";
  Status st = CheckKeyEndpoints(c);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string::npos, st.message().find("previous_keys[0].listen tcp://127.0.0.1:7700"));
  EXPECT_NE(std::string::npos, st.message().find("its own endpoint"));
}

TEST(BrokerConfigTest, ReportsEveryErrorAtOnce) {
  TempDir dir;
  WriteText(dir.file("broker.yaml"),
            "secret_key_file: k\npolicies_dir: p\npseudonym_key_file: q\nstore: {path: s, key_file: k}\nledger: {path: l, signing_key_file: k}\nheartbeat_ms: 1\nlog:\n  format: xml\n");
  auto c = LoadBrokerConfig(dir.file("broker.yaml"));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string::npos, c.status().message().find("heartbeat_ms"));
  EXPECT_NE(std::string::npos, c.status().message().find("log.format"));
}

TEST(BrokerConfigTest, MissingFile) {
  auto c = LoadBrokerConfig("/nonexistent/broker.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(Status::Code::kNotFound, c.status().code());
}

}  // namespace
}  // namespace liaison::broker
