// Runs the real liaison-gateway binary for one agency of a BrokerProcess, on
// a free loopback port with TLS material made by the openssl command, and
// calls it over real HTTPS with curl. Every reply is checked against
// docs/openapi.yaml (path, method, status, required properties).
#ifndef LIAISON_TESTS_INTEGRATION_GATEWAY_PROCESS_H_
#define LIAISON_TESTS_INTEGRATION_GATEWAY_PROCESS_H_

#include <string>
#include <vector>

#include "integration/broker_process.h"

namespace liaison::testing {

struct TestPki {
  std::string ca;  // signs both certificates below
  std::string server_cert, server_key;  // for 127.0.0.1 and localhost
  std::string client_cert, client_key;
};
// Writes a test CA, a server and a client certificate (P-256) under `dir`.
StatusOr<TestPki> MakeTestPki(const std::string& dir);

struct HttpReply {
  int status = 0;       // 0: no HTTP answer (see error)
  std::string body;
  std::string headers;  // raw, as received
  std::string error;    // curl's stderr
};

class GatewayProcess {
 public:
  enum class Auth { kToken, kClientCertificate };
  // `extra_config` is appended to gateway.yaml (e.g. a webhook: block).
  GatewayProcess(const TempDir& dir, const BrokerProcess& broker, const TestAgency& agency,
                 const std::string& extra_config = "", Auth auth = Auth::kToken);
  ~GatewayProcess();  // stops it if it runs

  // Writes the configs (the broker must be running) and starts the gateway;
  // waits until it listens.
  Status Start();
  int Stop(int signal = SIGTERM);
  // Where set_brokers() puts the list: the agent config's `brokers:`, or
  // gateway.yaml's own `brokers:` (the agent config then names the
  // BrokerProcess's one endpoint, which the gateway's list replaces).
  enum class BrokersIn { kAgentConfig, kGatewayConfig };
  // These brokers (`brokers:`, with short failover bounds in the agent
  // config) instead of the BrokerProcess's one endpoint.
  void set_brokers(std::vector<std::string> endpoints, BrokersIn where = BrokersIn::kAgentConfig) {
    brokers_ = std::move(endpoints);
    brokers_in_ = where;
  }
  // Replaces what Start() appends to gateway.yaml.
  void set_extra_config(std::string yaml) { extra_config_ = std::move(yaml); }
  bool running() const { return pid_ > 0; }

  // Calls the gateway over HTTPS. `path` may hold a query. With
  // `credentials` false, sends neither token nor client certificate.
  HttpReply Call(const std::string& method, const std::string& path, const std::string& body = "",
                 bool credentials = true, const std::vector<std::string>& curl_args = {}) const;

  std::string log() const;
  bool WaitForLog(const std::string& needle, int timeout_ms = 5000) const;
  const TestPki& pki() const { return pki_; }
  const std::string& token() const { return token_; }
  const std::string& endpoint() const { return endpoint_; }

 private:
  std::string dir_;
  const BrokerProcess& broker_;
  TestAgency agency_;
  std::string extra_config_;
  std::vector<std::string> brokers_;
  BrokersIn brokers_in_ = BrokersIn::kAgentConfig;
  Auth auth_;
  TestPki pki_;
  std::string token_;
  std::string endpoint_;
  int null_fd_ = -1;
  pid_t pid_ = -1;
};

// A property of a flat JSON reply: the text after "name": up to the next
// comma or brace, with quotes removed. Enough for ids and codes in tests.
std::string JsonField(const std::string& json, const std::string& name);

}  // namespace liaison::testing

#endif  // LIAISON_TESTS_INTEGRATION_GATEWAY_PROCESS_H_
