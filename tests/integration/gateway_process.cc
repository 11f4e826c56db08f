#include "integration/gateway_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace liaison::testing {
namespace {

// docs/openapi.yaml, loaded once per test process.
const YAML::Node& OpenApi() {
  static const YAML::Node doc = YAML::LoadFile(std::string(LIAISON_SOURCE_DIR) + "/docs/openapi.yaml");
  return doc;
}

std::vector<std::string> Segments(std::string_view path) {
  std::vector<std::string> out;
  std::string current;
  for (char c : path) {
    if (c == '/') {
      out.push_back(current);
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  out.push_back(current);
  return out;
}

// Fails the current test if docs/openapi.yaml does not document this reply.
void CheckDocumented(const std::string& method, const std::string& target, const HttpReply& reply) {
  if (reply.status == 0) return;  // no HTTP exchange (e.g. refused handshake)
  const std::string path = target.substr(0, target.find('?'));
  const auto actual = Segments(path);
  std::string matched;
  for (const auto& entry : OpenApi()["paths"]) {
    const auto segments = Segments(entry.first.as<std::string>());
    if (segments.size() != actual.size()) continue;
    bool same = true;
    for (size_t i = 0; i < segments.size() && same; ++i) {
      const bool parameter = segments[i].size() > 2 && segments[i].front() == '{';
      same = parameter ? !actual[i].empty() : segments[i] == actual[i];
    }
    if (same) matched = entry.first.as<std::string>();
    if (same) break;
  }
  std::string lower = method;
  for (char& c : lower) c = static_cast<char>(std::tolower(c));
  if (matched.empty()) {
    // Undocumented paths must be answered 404.
    EXPECT_EQ(reply.status, 404) << path << " is not in docs/openapi.yaml";
    return;
  }
  const YAML::Node operation = OpenApi()["paths"][matched][lower];
  if (!operation) {
    EXPECT_EQ(reply.status, 405) << method << " " << matched << " is not in docs/openapi.yaml";
    return;
  }
  const YAML::Node written = operation["responses"][std::to_string(reply.status)];
  ASSERT_TRUE(written) << "docs/openapi.yaml: " << method << " " << matched << " does not document status "
                       << reply.status << "; body: " << reply.body;
  // yaml-cpp's Node assignment writes through: resolve into a new handle.
  const YAML::Node response =
      written["$ref"] ? OpenApi()["components"]["responses"][written["$ref"].as<std::string>().substr(
                            std::string("#/components/responses/").size())]
                      : written;
  ASSERT_TRUE(response) << "docs/openapi.yaml: unresolved " << written["$ref"].as<std::string>("");
  if (!response["content"] || !response["content"]["application/json"]) return;
  const YAML::Node ref = response["content"]["application/json"]["schema"]["$ref"];
  if (!ref) return;
  const std::string name = ref.as<std::string>().substr(std::string("#/components/schemas/").size());
  const YAML::Node schema = OpenApi()["components"]["schemas"][name];
  ASSERT_TRUE(schema) << "docs/openapi.yaml: no schema " << name;
  for (const auto& required : schema["required"]) {
    EXPECT_NE(reply.body.find("\"" + required.as<std::string>() + "\":"), std::string::npos)
        << method << " " << matched << " " << reply.status << ": body lacks '" << required.as<std::string>()
        << "' required by docs/openapi.yaml schema " << name << ": " << reply.body;
  }
}

}  // namespace

StatusOr<TestPki> MakeTestPki(const std::string& dir) {
  std::filesystem::create_directories(dir);
  TestPki p{dir + "/ca.pem", dir + "/server.pem", dir + "/server.key", dir + "/client.pem",
            dir + "/client.key"};
  WriteText(dir + "/server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  const std::vector<std::vector<std::string>> commands = {
      {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", dir + "/ca.key", "-out", p.ca, "-days", "2", "-subj", "/CN=liaison test CA"},
      {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
       p.server_key, "-out", dir + "/server.csr", "-subj", "/CN=localhost"},
      {"openssl", "x509", "-req", "-in", dir + "/server.csr", "-CA", p.ca, "-CAkey", dir + "/ca.key",
       "-CAcreateserial", "-out", p.server_cert, "-days", "2", "-extfile", dir + "/server.ext"},
      {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
       p.client_key, "-out", dir + "/client.csr", "-subj", "/CN=agency case system"},
      {"openssl", "x509", "-req", "-in", dir + "/client.csr", "-CA", p.ca, "-CAkey", dir + "/ca.key",
       "-CAcreateserial", "-out", p.client_cert, "-days", "2"},
  };
  for (const auto& argv : commands) {
    std::string out, err;
    if (RunCommand(argv, &out, &err) != 0) return Status::Internal("openssl failed: " + err);
  }
  return p;
}

GatewayProcess::GatewayProcess(const TempDir& dir, const BrokerProcess& broker, const TestAgency& agency,
                               const std::string& extra_config, Auth auth)
    : dir_(dir.path().string() + "/gateway-" + agency.id),
      broker_(broker),
      agency_(agency),
      extra_config_(extra_config),
      auth_(auth),
      null_fd_(::open("/dev/null", O_WRONLY | O_CLOEXEC)) {
  std::filesystem::create_directories(dir_);
  auto pki = MakeTestPki(dir_ + "/tls");
  if (!pki.ok()) throw std::runtime_error(pki.status().ToString());
  pki_ = *pki;
  if (auto st = WriteCurveKeyPair(dir_ + "/keys", agency.id, agency.keys); !st.ok()) {
    throw std::runtime_error(st.ToString());
  }
  if (auto st = WriteCurveKeyPair(dir_ + "/keys", "broker", broker.broker_keys()); !st.ok()) {
    throw std::runtime_error(st.ToString());
  }
  auto token = WriteNewToken(dir_ + "/token");
  if (!token.ok()) throw std::runtime_error(token.status().ToString());
  token_ = *token;
}

GatewayProcess::~GatewayProcess() {
  if (running()) Stop(SIGKILL);
  if (null_fd_ >= 0) ::close(null_fd_);
}

Status GatewayProcess::Start() {
  std::string list;
  for (const auto& endpoint : brokers_) list += "  - " + endpoint + "\n";
  std::string brokers = "broker: " + broker_.endpoint() + "\n";
  if (!brokers_.empty() && brokers_in_ == BrokersIn::kAgentConfig) brokers = "brokers:\n" + list;
  if (!brokers_.empty()) {
    brokers += "connect_timeout_ms: 1000\nwelcome_timeout_ms: 1000\nsilence_timeout_ms: 2000\n";
  }
  WriteText(dir_ + "/agent.yaml", brokers +
                                      "broker_public_key_file: keys/broker.pub\n"
                                      "secret_key_file: keys/" + agency_.id + ".key\n"
                                      "receipt_timeout_ms: 2000\nresend_interval_ms: 500\nheartbeat_ms: 200\n");
  std::string config =
      "agent_config: agent.yaml\nlisten: 127.0.0.1:0\nstate_file: gateway.db\n" +
      std::string(!brokers_.empty() && brokers_in_ == BrokersIn::kGatewayConfig ? "brokers:\n" + list : "") +
      "tls:\n  certificate_file: tls/server.pem\n  private_key_file: tls/server.key\n";
  if (auth_ == Auth::kClientCertificate) {
    config += "  client_ca_file: tls/ca.pem\n";
  } else {
    config += "token_file: token\n";
  }
  config += "log:\n  console: false\n  file: gateway.log\n  level: debug\n" + extra_config_;
  WriteText(dir_ + "/gateway.yaml", config);
  const std::string ready = dir_ + "/endpoint";
  std::filesystem::remove(ready);
  const int err_fd = ::open((dir_ + "/stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  pid_ = Spawn({LIAISON_GATEWAY_BIN, "--config", dir_ + "/gateway.yaml", "--ready-file", ready}, null_fd_,
               err_fd);
  ::close(err_fd);
  return WaitForReadyFile(&pid_, ready, "gateway",
                          [this] { return "stderr:\n" + ReadText(dir_ + "/stderr") + "log:\n" + log(); }, &endpoint_);
}

int GatewayProcess::Stop(int signal) { return StopProcess(&pid_, signal); }

HttpReply GatewayProcess::Call(const std::string& method, const std::string& path, const std::string& body,
                               bool credentials, const std::vector<std::string>& curl_args) const {
  TempDir tmp;
  std::vector<std::string> argv = {"curl", "-sS", "--max-time", "30", "--cacert", pki_.ca, "-X", method,
                                   "-o", tmp.file("body"), "-D", tmp.file("headers"), "-w", "%{http_code}"};
  if (credentials && auth_ == Auth::kToken) {
    argv.insert(argv.end(), {"-H", "Authorization: Bearer " + token_});
  }
  if (credentials && auth_ == Auth::kClientCertificate) {
    argv.insert(argv.end(), {"--cert", pki_.client_cert, "--key", pki_.client_key});
  }
  if (!body.empty()) {
    WriteText(tmp.file("request"), body);
    argv.insert(argv.end(), {"-H", "Content-Type: application/json", "--data-binary", "@" + tmp.file("request")});
  }
  argv.insert(argv.end(), curl_args.begin(), curl_args.end());
  argv.push_back("https://" + endpoint_ + path);
  HttpReply reply;
  std::string out;
  RunCommand(argv, &out, &reply.error);
  reply.status = std::atoi(out.c_str());
  reply.body = ReadText(tmp.file("body"));
  reply.headers = ReadText(tmp.file("headers"));
  CheckDocumented(method, path, reply);
  return reply;
}

std::string GatewayProcess::log() const { return ReadText(dir_ + "/gateway.log"); }

bool GatewayProcess::WaitForLog(const std::string& needle, int timeout_ms) const {
  return WaitForText([this] { return log(); }, needle, timeout_ms);
}

std::string JsonField(const std::string& json, const std::string& name) {
  const std::string key = "\"" + name + "\":";
  const auto at = json.find(key);
  if (at == std::string::npos) return {};
  auto start = at + key.size();
  while (start < json.size() && json[start] == ' ') ++start;
  const bool quoted = start < json.size() && json[start] == '"';
  if (quoted) {
    const auto end = json.find('"', start + 1);
    return json.substr(start + 1, end - start - 1);
  }
  const auto end = json.find_first_of(",}]", start);
  return json.substr(start, end - start);
}

}  // namespace liaison::testing
