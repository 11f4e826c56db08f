// liaison-gateway end to end: an agency system that speaks only HTTPS (curl
// here) sends and receives through the real gateway and the real broker,
// with TLS, the bearer token or a client certificate, CURVE behind. Every
// reply is checked against docs/openapi.yaml by GatewayProcess::Call.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <filesystem>
#include <future>
#include <iostream>
#include <mutex>
#include <set>
#include <thread>

#include <sys/stat.h>

#include <yaml-cpp/yaml.h>

#include "gateway_store.h"
#include "integration/gateway_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace http = boost::beast::http;

std::string Update(const std::string& to, const std::string& notes = "progress", const std::string& id = "") {
  return std::string("{") + (id.empty() ? "" : "\"id\": \"" + id + "\", ") + "\"case_ref\": \"CASE-GW-1\", " +
         "\"to\": [{\"agency\": \"" + to + "\"}], \"payload_type\": \"CaseUpdate\", " +
         "\"payload\": {\"notes\": \"" + notes + "\"}}";
}

std::vector<uint8_t> UpdateBytes(const std::string& id, const std::string& to) {
  return CaseMessage(id, {to}, "CASE-GW-2", false, "", "from the native agent");
}

// A message as the agency's system posts it: CaseMessage's JSON form.
std::string CaseJson(const std::string& id, const std::string& to, const std::string& case_ref, bool erasure,
                     const std::string& notes = "progress") {
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto json = codec.ToJson(CaseMessage(id, {to}, case_ref, erasure, "", notes), false);
  if (!json.ok()) throw std::runtime_error(json.status().ToString());
  return *json;
}

// The agency system's webhook endpoint: HTTPS, answers 503 to the first
// `failures` requests and 200 after.
class WebhookReceiver {
 public:
  WebhookReceiver(const TestPki& pki, int failures) : failures_(failures), acceptor_(io_) {
    tls_.use_certificate_chain_file(pki.server_cert);
    tls_.use_private_key_file(pki.server_key, asio::ssl::context::pem);
    asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(endpoint.protocol());
    acceptor_.bind(endpoint);
    acceptor_.listen();
    acceptor_.non_blocking(true);
    thread_ = std::thread([this] { Loop(); });
  }
  ~WebhookReceiver() {
    stop_ = true;
    thread_.join();
  }
  std::string url() const {
    return "https://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/liaison/inbox";
  }
  struct Seen {
    std::string target, authorization, message_id, body;
    int answered;
  };
  std::vector<Seen> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  void Loop() {
    while (!stop_) {
      asio::ip::tcp::socket socket(io_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (ec) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      socket.non_blocking(false);
      asio::ssl::stream<asio::ip::tcp::socket> stream(std::move(socket), tls_);
      stream.handshake(asio::ssl::stream_base::server, ec);
      if (ec) continue;
      boost::beast::flat_buffer buffer;
      http::request<http::string_body> request;
      http::read(stream, buffer, request, ec);
      if (ec) continue;
      int status;
      {
        std::lock_guard lock(mu_);
        status = static_cast<int>(seen_.size()) < failures_ ? 503 : 200;
        seen_.push_back({std::string(request.target()), std::string(request[http::field::authorization]),
                         std::string(request["Liaison-Message-Id"]), request.body(), status});
      }
      http::response<http::string_body> response{static_cast<http::status>(status), 11};
      response.keep_alive(false);
      response.body() = status == 200 ? "thanks\n" : "busy\n";
      response.prepare_payload();
      http::write(stream, response, ec);
      stream.shutdown(ec);
    }
  }

  int failures_;
  std::atomic<bool> stop_{false};
  asio::io_context io_;
  asio::ssl::context tls_{asio::ssl::context::tls_server};
  asio::ip::tcp::acceptor acceptor_;
  std::mutex mu_;
  std::vector<Seen> seen_;
  std::thread thread_;
};

class GatewayTest : public ::testing::Test {
 protected:
  void StartBroker(const std::string& extra = "") {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{a_, b_}, extra);
    Status st = broker_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  void StartGateway(const std::string& extra = "",
                    GatewayProcess::Auth auth = GatewayProcess::Auth::kToken) {
    gateway_ = std::make_unique<GatewayProcess>(dir_, *broker_, a_, extra, auth);
    Status st = gateway_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  std::unique_ptr<Agent> Connect(const TestAgency& who, wire::Role role) {
    auto agent = Agent::Connect(broker_->AgentFor(who, role));
    if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
    if (role == wire::Role::receiver && !(*agent)->WaitReady(5000ms).ok()) {
      throw std::runtime_error("not welcomed");
    }
    return std::move(*agent);
  }
  // Polls the receipt until `done` holds for its body (or 10 s pass).
  HttpReply WaitForReceipt(const std::string& url, const std::function<bool(const HttpReply&)>& done) {
    HttpReply reply;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      reply = gateway_->Call("GET", url);
      if (done(reply)) break;
      std::this_thread::sleep_for(100ms);
    }
    return reply;
  }

  TempDir dir_;
  TestAgency a_ = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b_ = MakeAgency("b", "youth-welfare", "mombasa");
  std::unique_ptr<BrokerProcess> broker_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(GatewayTest, AnHttpsOnlySystemSendsAndLearnsWhatHappened) {
  StartBroker();
  StartGateway();
  auto b = Connect(b_, wire::Role::receiver);

  const HttpReply sent = gateway_->Call("POST", "/v1/messages", Update("b"));
  ASSERT_EQ(sent.status, 202) << sent.body << sent.error;
  const std::string id = JsonField(sent.body, "message_id");
  const std::string url = JsonField(sent.body, "receipt_url");
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(url, "/v1/messages/" + id + "/receipt");
  EXPECT_NE(sent.headers.find("Location: " + url), std::string::npos) << sent.headers;

  HttpReply receipt = WaitForReceipt(url, [](const HttpReply& r) { return r.status == 200; });
  ASSERT_EQ(receipt.status, 200) << receipt.body;
  EXPECT_NE(receipt.body.find("\"recipient\": \"b\""), std::string::npos) << receipt.body;
  EXPECT_EQ(JsonField(receipt.body, "code"), "stored") << receipt.body;
  EXPECT_EQ(JsonField(receipt.body, "from"), "a");

  // The native agent of the other agency gets it, once, and acks.
  auto message = b->Receive(5000ms);
  ASSERT_TRUE(message.ok() && message->has_value());
  EXPECT_EQ((**message)->id()->str(), id);
  EXPECT_EQ((**message)->payload_as_CaseUpdate()->notes()->str(), "progress");
  ASSERT_TRUE(b->Ack(id).ok());

  // ...and the sender's receipt now says so.
  receipt = WaitForReceipt(url, [](const HttpReply& r) { return JsonField(r.body, "code") == "delivered"; });
  EXPECT_EQ(JsonField(receipt.body, "code"), "delivered") << receipt.body;

  // A resend of the same message (same id) is a retry, not a second message.
  const std::string again = Update("b", "progress", id);
  HttpReply first = gateway_->Call("POST", "/v1/messages", Update("b", "other", "fixed-id-1"));
  ASSERT_EQ(first.status, 202);
  HttpReply retry = gateway_->Call("POST", "/v1/messages", Update("b", "other", "fixed-id-1"));
  ASSERT_EQ(retry.status, 202) << retry.body;
  EXPECT_EQ(JsonField(retry.body, "message_id"), "fixed-id-1");
  auto one = b->Receive(5000ms);
  ASSERT_TRUE(one.ok() && one->has_value());
  EXPECT_EQ((**one)->id()->str(), "fixed-id-1");
  ASSERT_TRUE(b->Ack("fixed-id-1").ok());
  auto none = b->Receive(700ms);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value()) << "the retry was delivered again";
  (void)again;
}

TEST_F(GatewayTest, TheInboxLongPollsAndAcks) {
  StartBroker();
  StartGateway();
  auto b = Connect(b_, wire::Role::sender);
  ASSERT_TRUE(gateway_->WaitForLog("event=broker_welcomed"));

  auto poll = std::async(std::launch::async, [&] { return gateway_->Call("GET", "/v1/inbox?wait=20"); });
  std::this_thread::sleep_for(300ms);
  auto receipt = b->Send(UpdateBytes("to-gateway-1", "a"));
  ASSERT_TRUE(receipt.ok());
  const HttpReply page = poll.get();
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_NE(page.body.find("\"id\": \"to-gateway-1\""), std::string::npos) << page.body;
  EXPECT_NE(page.body.find("from the native agent"), std::string::npos);
  EXPECT_NE(page.body.find("\"from\": \"b\""), std::string::npos);

  // Handed out: not handed out again within its lease.
  const HttpReply empty = gateway_->Call("GET", "/v1/inbox?wait=0");
  ASSERT_EQ(empty.status, 200);
  EXPECT_EQ(empty.body.find("to-gateway-1"), std::string::npos) << empty.body;

  const HttpReply acked = gateway_->Call("POST", "/v1/inbox/to-gateway-1/ack");
  ASSERT_EQ(acked.status, 200) << acked.body;
  EXPECT_EQ(JsonField(acked.body, "message_id"), "to-gateway-1");
  const HttpReply twice = gateway_->Call("POST", "/v1/inbox/to-gateway-1/ack");
  EXPECT_EQ(twice.status, 404);
  EXPECT_EQ(JsonField(twice.body, "error"), "not_in_inbox");
}

TEST_F(GatewayTest, AnUnackedMessageComesBackAfterAGatewayRestartAndAnAckedOneDoesNot) {
  StartBroker();
  StartGateway("inbox:\n  lease_seconds: 60\n");
  auto b = Connect(b_, wire::Role::sender);
  ASSERT_TRUE(b->Send(UpdateBytes("kept-1", "a")).ok());
  HttpReply page = gateway_->Call("GET", "/v1/inbox?wait=10");
  ASSERT_NE(page.body.find("kept-1"), std::string::npos) << page.body;

  // Not acked: the broker still holds it and delivers it to the new gateway.
  ASSERT_EQ(gateway_->Stop(), 0);
  ASSERT_TRUE(gateway_->Start().ok());
  page = gateway_->Call("GET", "/v1/inbox?wait=10");
  ASSERT_NE(page.body.find("kept-1"), std::string::npos) << page.body;
  ASSERT_EQ(gateway_->Call("POST", "/v1/inbox/kept-1/ack").status, 200);
  // The ack reached the broker: the message does not come back.
  ASSERT_TRUE(gateway_->WaitForLog("event=http_request"));
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(gateway_->Stop(), 0);
  ASSERT_TRUE(gateway_->Start().ok());
  page = gateway_->Call("GET", "/v1/inbox?wait=2");
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.body.find("kept-1"), std::string::npos) << page.body;
}

TEST_F(GatewayTest, BadRequestsGetClearAnswersAndTheGatewayKeepsServing) {
  StartBroker("limits:\n  max_message_bytes: 3000\n");
  StartGateway("max_body_bytes: 8192\n");
  ASSERT_TRUE(gateway_->WaitForLog("event=broker_welcomed"));

  // Unknown field: the answer names the line and the field, never a value.
  HttpReply r = gateway_->Call("POST", "/v1/messages",
                               "{\"to\": [{\"agency\": \"b\"}],\n \"payload_type\": \"CaseUpdate\",\n"
                               " \"payload\": {\"subjekt\": \"Marker-Value-7731\"}}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(JsonField(r.body, "error"), "invalid_json");
  EXPECT_NE(r.body.find("subjekt"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("request body:3:"), std::string::npos) << "no line number: " << r.body;
  EXPECT_EQ(r.body.find("Marker-Value-7731"), std::string::npos) << r.body;

  r = gateway_->Call("POST", "/v1/messages", "{\"to\": [");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(JsonField(r.body, "error"), "invalid_json");
  // Values the parser could not take are not quoted back either.
  r = gateway_->Call("POST", "/v1/messages",
                     "{\"urgency\": \"Marker-Value-7731\", \"to\": [{\"agency\": \"b\"}]}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("request body:1: 31: error: unknown enum value"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("Marker-Value-7731"), std::string::npos) << r.body;
  r = gateway_->Call("POST", "/v1/messages",
                     "{\"case_ref\": 7731.5e, \"to\": [{\"agency\": \"b\"}]}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body.find("7731"), std::string::npos) << r.body;

  // Wrong token, no token.
  r = gateway_->Call("POST", "/v1/messages", Update("b"), /*credentials=*/false,
                     {"-H", "Authorization: Bearer " + std::string(64, '0')});
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.headers.find("WWW-Authenticate: Bearer"), std::string::npos) << r.headers;
  r = gateway_->Call("GET", "/v1/inbox", "", /*credentials=*/false);
  EXPECT_EQ(r.status, 401);

  // Oversize: the body, and (smaller body) the broker's own limit.
  r = gateway_->Call("POST", "/v1/messages", Update("b", std::string(10000, 'x')));
  EXPECT_EQ(r.status, 413) << r.error;
  EXPECT_EQ(JsonField(r.body, "error"), "too_large");
  r = gateway_->Call("POST", "/v1/messages", Update("b", std::string(5000, 'x')));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_NE(r.body.find("the broker takes at most 3000"), std::string::npos) << r.body;

  // Same id, different message.
  ASSERT_EQ(gateway_->Call("POST", "/v1/messages", Update("b", "one", "dup-1")).status, 202);
  r = gateway_->Call("POST", "/v1/messages", Update("b", "two", "dup-1"));
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(JsonField(r.body, "error"), "id_conflict");

  EXPECT_EQ(gateway_->Call("GET", "/v1/messages/never-sent/receipt").status, 404);
  EXPECT_EQ(gateway_->Call("GET", "/v1/messages").status, 405);
  EXPECT_EQ(gateway_->Call("DELETE", "/v1/inbox/x/ack").status, 405);
  EXPECT_EQ(gateway_->Call("GET", "/v1/nothing-here").status, 404);
  EXPECT_EQ(gateway_->Call("GET", "/v1/inbox?wait=abc").status, 400);
  EXPECT_EQ(gateway_->Call("GET", "/v1/inbox?wait=100000").status, 400);
  EXPECT_EQ(gateway_->Call("GET", "/v1/messages/%zz/receipt").status, 400);
  EXPECT_EQ(gateway_->Call("GET", "/v1/messages/receipt").status, 404);
  EXPECT_EQ(gateway_->Call("POST", "/v1/inbox/ack").status, 404);
  // The auth scheme is case-insensitive (RFC 7235).
  r = gateway_->Call("POST", "/v1/messages", Update("b"), /*credentials=*/false,
                     {"-H", "Authorization: bearer " + gateway_->token()});
  EXPECT_EQ(r.status, 202) << r.body;

  // Health needs no credentials and holds no personal data.
  r = gateway_->Call("GET", "/healthz", "", /*credentials=*/false);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(JsonField(r.body, "status"), "ok");

  // Still serving; nothing of the refused bodies reached the log.
  EXPECT_EQ(gateway_->Call("POST", "/v1/messages", Update("b")).status, 202);
  EXPECT_EQ(gateway_->log().find("Marker-Value-7731"), std::string::npos);
  EXPECT_EQ(gateway_->log().find(gateway_->token()), std::string::npos);
}

TEST_F(GatewayTest, MessagesAcceptedWhileTheBrokerIsDownGoOutLater) {
  StartBroker();
  StartGateway();
  const std::string endpoint = broker_->endpoint();
  ASSERT_EQ(broker_->Stop(), 0);

  const HttpReply sent = gateway_->Call("POST", "/v1/messages", Update("b"));
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string url = JsonField(sent.body, "receipt_url");
  const HttpReply pending = gateway_->Call("GET", url);
  EXPECT_EQ(pending.status, 202);
  EXPECT_EQ(JsonField(pending.body, "state"), "pending");

  // The gateway restarts too: what it accepted is on disk.
  ASSERT_EQ(gateway_->Stop(), 0);
  ASSERT_TRUE(gateway_->Start().ok());
  ASSERT_TRUE(broker_->Start(endpoint).ok());
  const HttpReply receipt = WaitForReceipt(url, [](const HttpReply& r) { return r.status == 200; });
  ASSERT_EQ(receipt.status, 200) << receipt.body;
  EXPECT_EQ(JsonField(receipt.body, "code"), "stored") << receipt.body;
}

TEST_F(GatewayTest, WebhookDeliveryRetriesUntilTheSystemTakesIt) {
  StartBroker();
  gateway_ = std::make_unique<GatewayProcess>(dir_, *broker_, a_);
  WebhookReceiver hook(gateway_->pki(), /*failures=*/2);
  auto webhook_token = WriteNewToken(dir_.file("gateway-a/webhook-token"));
  ASSERT_TRUE(webhook_token.ok());
  gateway_->set_extra_config("webhook:\n  url: " + hook.url() +
                             "\n  ca_file: tls/ca.pem\n  token_file: webhook-token\n"
                             "  retry_initial_ms: 100\n  timeout_ms: 3000\n");
  ASSERT_TRUE(gateway_->Start().ok());

  auto b_send = Connect(b_, wire::Role::sender);
  auto b_notices = Connect(b_, wire::Role::receiver);
  ASSERT_TRUE(b_send->Send(UpdateBytes("hooked-1", "a")).ok());

  // 503, 503, then 200: three attempts, the same message each time.
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (hook.seen().size() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  auto seen = hook.seen();
  ASSERT_EQ(seen.size(), 3u) << gateway_->log();
  for (const auto& request : seen) {
    EXPECT_EQ(request.target, "/liaison/inbox");
    EXPECT_EQ(request.message_id, "hooked-1");
    EXPECT_EQ(request.authorization, "Bearer " + *webhook_token);
    EXPECT_NE(request.body.find("\"id\": \"hooked-1\""), std::string::npos) << request.body;
  }
  EXPECT_TRUE(gateway_->WaitForLog("event=webhook_delivered message_id=hooked-1 status=200 attempts=3"))
      << gateway_->log();

  // The 2xx acked it to the broker: the sender hears "delivered".
  bool delivered = false;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!delivered && std::chrono::steady_clock::now() < until) {
    (void)b_notices->Receive(100ms);
    while (auto notice = b_notices->TakeNotice()) {
      if ((*notice)->message_id()->str() == "hooked-1" && (*notice)->recipients()->Get(0)->code() ==
                                                               wire::Code::delivered) {
        delivered = true;
      }
    }
  }
  EXPECT_TRUE(delivered);
  EXPECT_EQ(hook.seen().size(), 3u) << "delivered again after a 2xx";

  // In webhook mode the inbox is not served.
  EXPECT_EQ(gateway_->Call("GET", "/v1/inbox").status, 409);
  EXPECT_EQ(gateway_->Call("POST", "/v1/inbox/hooked-1/ack").status, 409);
}

TEST_F(GatewayTest, AClientCertificateCanReplaceTheToken) {
  StartBroker();
  StartGateway("", GatewayProcess::Auth::kClientCertificate);
  const HttpReply sent = gateway_->Call("POST", "/v1/messages", Update("b"));
  EXPECT_EQ(sent.status, 202) << sent.body << sent.error;
  // Without a certificate the TLS handshake itself is refused.
  const HttpReply refused = gateway_->Call("POST", "/v1/messages", Update("b"), /*credentials=*/false);
  EXPECT_EQ(refused.status, 0);
  EXPECT_FALSE(refused.error.empty());
  EXPECT_TRUE(gateway_->WaitForLog("event=tls_handshake_failed"));
}

TEST_F(GatewayTest, BadConfigurationStopsTheGatewayWithAClearMessage) {
  StartBroker();
  gateway_ = std::make_unique<GatewayProcess>(dir_, *broker_, a_);
  gateway_->set_extra_config("inbox:\n  lease_secs: 5\n");
  Status st = gateway_->Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("exited with 2"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("gateway.yaml:"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("lease_seconds"), std::string::npos) << "no hint: " << st.message();
}

TEST_F(GatewayTest, EveryOperationInTheOpenApiDocumentIsServed) {
  StartBroker();
  StartGateway();
  const YAML::Node doc = YAML::LoadFile(std::string(LIAISON_SOURCE_DIR) + "/docs/openapi.yaml");
  int operations = 0;
  for (const auto& path : doc["paths"]) {
    std::string target = path.first.as<std::string>();
    if (auto at = target.find("{id}"); at != std::string::npos) target.replace(at, 4, "some-id");
    if (auto at = target.find("{sender}"); at != std::string::npos) target.replace(at, 8, "some-sender");
    for (const auto& method : path.second) {
      std::string verb = method.first.as<std::string>();
      for (char& c : verb) c = static_cast<char>(std::toupper(c));
      const HttpReply reply = gateway_->Call(verb, target, verb == "POST" ? Update("b") : "");
      EXPECT_NE(reply.status, 405) << verb << " " << target;
      EXPECT_NE(JsonField(reply.body, "error"), "not_found") << verb << " " << target;
      ++operations;
    }
  }
  EXPECT_EQ(operations, 7);
}

// A client generated from docs/openapi.yaml (Perl's OpenAPI::Client, which
// builds its methods from the document and validates every request and,
// in tests/openapi_client_test.pl, every response against it) sends a
// referral through the real gateway and reads its receipt; the recipient's
// native agent receives the referral.
TEST_F(GatewayTest, AClientGeneratedFromTheOpenApiDocumentSendsAReferralAndReadsItsReceipt) {
  StartBroker();
  StartGateway();
  auto b = Connect(b_, wire::Role::receiver);
  TempDir tmp;
  WriteText(tmp.file("token"), gateway_->token() + "\n");
  std::string out, err;
  const int status = RunCommand({"/usr/bin/perl", std::string(LIAISON_SOURCE_DIR) + "/tests/openapi_client_test.pl",
                                 std::string(LIAISON_SOURCE_DIR) + "/docs/openapi.yaml",
                                 "https://" + gateway_->endpoint(), tmp.file("token"), gateway_->pki().ca, "b"},
                                &out, &err);
  ASSERT_EQ(status, 0) << out << err << "\ngateway log:\n" << gateway_->log();
  std::cout << out;  // what the generated client did, in the test log
  EXPECT_NE(out.find("ok: getReceipt 200, b: stored"), std::string::npos) << out;
  auto message = b->Receive(5000ms);
  ASSERT_TRUE(message.ok() && message->has_value());
  EXPECT_EQ((**message)->payload_type(), wire::Payload::CaseReferral);
  EXPECT_EQ((**message)->id()->str().rfind("oapi-", 0), 0u) << (**message)->id()->str();
  EXPECT_EQ((**message)->from()->str(), "a");
  ASSERT_TRUE(b->Ack((**message)->id()->str()).ok());
}

// Erasure that shreds, in the gateway's state file: messages of two cases
// wait there while the broker is down; a copy of the file (with its -wal)
// is the backup. The system then posts an erasure of one case, and a later
// message of it; the broker comes back and takes everything. With the
// gateway state key and its current ring the backup opens the other case's
// message and none of the erased case's; the later message went out under
// the case's new key; the ledger verifies and shows the erasure.
TEST_F(GatewayTest, AnErasureLeavesAnEarlierBackupOfTheStateReadableForTheOtherCaseOnly) {
  namespace fs = std::filesystem;
  StartBroker();
  StartGateway();
  const std::string endpoint = broker_->endpoint();
  ASSERT_EQ(broker_->Stop(), 0);
  const std::string state = dir_.file("gateway-a/gateway.db"), key_file = dir_.file("gateway-a/gateway.state.key");
  const std::string marker = "PLAINTEXT-MARKER-";
  for (const auto& [id, case_ref] : std::vector<std::pair<std::string, std::string>>{
           {"gx1", "CASE-GW-X"}, {"gx2", "CASE-GW-X"}, {"gy1", "CASE-GW-Y"}}) {
    const HttpReply sent = gateway_->Call("POST", "/v1/messages", CaseJson(id, "b", case_ref, false, marker + id));
    ASSERT_EQ(sent.status, 202) << sent.body;
  }
  for (const std::string& secret : {key_file, key_file + ".ring"}) {
    struct stat st {};
    ASSERT_EQ(0, ::stat(secret.c_str(), &st)) << secret;
    EXPECT_EQ(0600u, st.st_mode & 0777) << secret;
  }
  const std::string backup = dir_.file("state-backup");
  fs::create_directories(backup);
  fs::copy_file(state, backup + "/gateway.db");
  if (fs::exists(state + "-wal")) fs::copy_file(state + "-wal", backup + "/gateway.db-wal");
  const std::string raw = ReadText(backup + "/gateway.db") +
                          (fs::exists(backup + "/gateway.db-wal") ? ReadText(backup + "/gateway.db-wal") : "");
  EXPECT_EQ(std::string::npos, raw.find(marker)) << "a message's text is in the state file in the clear";
  EXPECT_EQ(std::string::npos, raw.find("CASE-GW-X")) << "a case reference is in the state file in the clear";

  // What a copy of the backup opens with the key and the current ring.
  auto open_copy = [&](std::set<std::string>* ids, int64_t* shredded) {
    TempDir scratch;
    fs::copy_file(backup + "/gateway.db", scratch.file("gw.db"));
    if (fs::exists(backup + "/gateway.db-wal")) fs::copy_file(backup + "/gateway.db-wal", scratch.file("gw.db-wal"));
    auto store = gateway::GatewayStore::Open(scratch.file("gw.db"), key_file);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto pending = (*store)->Pending();
    ASSERT_TRUE(pending.ok()) << pending.status().ToString();
    for (const auto& m : pending->messages) {
      const wire::Envelope* e = wire::VerifyEnvelope(m.envelope);
      ASSERT_NE(nullptr, e) << m.id;
      EXPECT_EQ(m.id, e->id()->str());
      ids->insert(m.id);
    }
    *shredded = pending->shredded;
  };
  std::set<std::string> before;
  int64_t shredded_before = -1;
  open_copy(&before, &shredded_before);
  EXPECT_EQ((std::set<std::string>{"gx1", "gx2", "gy1"}), before);
  EXPECT_EQ(0, shredded_before);

  const HttpReply erase = gateway_->Call("POST", "/v1/messages", CaseJson("gx-erase", "b", "CASE-GW-X", true));
  ASSERT_EQ(erase.status, 202) << erase.body;
  const HttpReply later = gateway_->Call("POST", "/v1/messages", CaseJson("gx3", "b", "CASE-GW-X", false));
  ASSERT_EQ(later.status, 202) << later.body;
  ASSERT_TRUE(broker_->Start(endpoint).ok());
  // The gateway's sender backs off while the broker is down: up to 30 s
  // for all five to be answered.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  for (const char* id : {"gx1", "gx2", "gy1", "gx-erase", "gx3"}) {
    HttpReply r;
    while (std::chrono::steady_clock::now() < deadline) {
      r = gateway_->Call("GET", "/v1/messages/" + std::string(id) + "/receipt");
      if (r.status == 200) break;
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(r.status, 200) << id << ": " << r.body;
  }
  ASSERT_TRUE(gateway_->WaitForLog("event=case_keys_rotated")) << gateway_->log();
  ASSERT_EQ(gateway_->Stop(), 0);
  {
    const std::string text = ReadText(key_file + ".ring");
    size_t keks = 0;
    for (size_t at = text.find("\nkek "); at != std::string::npos; at = text.find("\nkek ", at + 1)) ++keks;
    EXPECT_EQ(1u, keks) << "the previous epoch's KEK must be gone";
  }
  std::set<std::string> after;
  int64_t shredded_after = -1;
  open_copy(&after, &shredded_after);
  EXPECT_EQ((std::set<std::string>{"gy1"}), after);
  EXPECT_EQ(2, shredded_after);  // gx1, gx2

  // b, offline until now, gets the other case, the erasure and the later
  // message: the broker removed the erased case's copies waiting for it.
  auto b = Connect(b_, wire::Role::receiver);
  std::set<std::string> received;
  while (received.size() < 3) {
    auto m = b->Receive(5000ms);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    if (!m->has_value()) break;
    received.insert((**m)->id()->str());
    ASSERT_TRUE(b->Ack("a", (**m)->id()->string_view()).ok());
  }
  EXPECT_EQ((std::set<std::string>{"gy1", "gx-erase", "gx3"}), received);
  std::string out, err;
  ASSERT_EQ(0, RunCommand({LIAISON_CLI_BIN, "audit", "verify", "--ledger", broker_->ledger_path(), "--public-key",
                           broker_->ledger_public_key()},
                          &out, &err))
      << out << err;
  EXPECT_NE(std::string::npos, ReadText(broker_->ledger_path()).find("ErasureRequest"));
}

}  // namespace
}  // namespace liaison::testing
