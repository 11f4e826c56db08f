// The ZAP handler on its own: a REQ socket plays libzmq's part (RFC 27).
#include "transport/zap_handler.h"

#include <gtest/gtest.h>

#include <zmq_addon.hpp>

#include "liaison/keys.h"

namespace liaison::broker {
namespace {

struct Reply {
  std::string status_code, status_text, user_id, metadata;
};

class ZapHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    keys_ = *GenerateCurveKeyPair();
    Agency a;
    a.id = "exit-a";
    a.kind = "exit-programme";
    a.region = "mombasa";
    a.public_key = keys_.public_z85;
    a.raw_key = DecodeZ85Key(keys_.public_z85);
    directory_ = AgencyDirectory::FromAgencies({a});
    zap_ = std::make_unique<ZapHandler>(
        context_, [this] { return directory_; },
        std::map<std::string, ZapHandler::KeyWindow>{
            {kCurrentKeyDomain, {INT64_MAX, "current0fingerpr"}},
            {PreviousKeyDomain(0), {NowMillis() + 60'000, "previous0fingerp"}},
            {PreviousKeyDomain(1), {NowMillis() - 1, "retired0fingerpr"}}});
    ASSERT_TRUE(zap_->Start().ok());
    client_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::req);
    client_->set(zmq::sockopt::linger, 0);
    client_->set(zmq::sockopt::rcvtimeo, 5000);
    client_->connect("inproc://zeromq.zap.01");
  }
  void TearDown() override {
    client_.reset();
    zap_.reset();
  }

  Reply Ask(const std::string& domain, const std::string& raw_key) {
    std::vector<zmq::const_buffer> request = {
        zmq::str_buffer("1.0"),       zmq::str_buffer("7"),     zmq::buffer(domain),
        zmq::str_buffer("127.0.0.1"), zmq::str_buffer(""),      zmq::str_buffer("CURVE"),
        zmq::buffer(raw_key)};
    EXPECT_TRUE(zmq::send_multipart(*client_, request));
    std::vector<zmq::message_t> reply;
    EXPECT_TRUE(zmq::recv_multipart(*client_, std::back_inserter(reply)));
    if (reply.size() != 6) return {};
    EXPECT_EQ("1.0", reply[0].to_string());
    EXPECT_EQ("7", reply[1].to_string());
    return {reply[2].to_string(), reply[3].to_string(), reply[4].to_string(), reply[5].to_string()};
  }

  zmq::context_t context_;
  CurveKeyPair keys_;
  std::shared_ptr<const AgencyDirectory> directory_;
  std::unique_ptr<ZapHandler> zap_;
  std::unique_ptr<zmq::socket_t> client_;
};

TEST_F(ZapHandlerTest, AdmitsRegisteredKeysAndNamesTheBrokerKeyOfTheConnection) {
  const std::string raw = DecodeZ85Key(keys_.public_z85);
  Reply current = Ask(kCurrentKeyDomain, raw);
  EXPECT_EQ("200", current.status_code);
  EXPECT_EQ("exit-a", current.user_id);
  EXPECT_NE(std::string::npos, current.metadata.find(kKeyProperty));
  EXPECT_NE(std::string::npos, current.metadata.find(std::string(kBrokerKeyProperty)));
  EXPECT_NE(std::string::npos, current.metadata.find(keys_.public_z85));
  EXPECT_NE(std::string::npos, current.metadata.find(std::string(kCurrentKeyDomain)));

  Reply overlap = Ask(PreviousKeyDomain(0), raw);
  EXPECT_EQ("200", overlap.status_code);
  EXPECT_NE(std::string::npos, overlap.metadata.find(PreviousKeyDomain(0)));

  EXPECT_EQ("400", Ask(kCurrentKeyDomain, DecodeZ85Key(GenerateCurveKeyPair()->public_z85)).status_code);
}

TEST_F(ZapHandlerTest, RefusesHandshakesOnARetiredOrUnknownBrokerKey) {
  const std::string raw = DecodeZ85Key(keys_.public_z85);
  Reply retired = Ask(PreviousKeyDomain(1), raw);
  EXPECT_EQ("400", retired.status_code);
  EXPECT_EQ("broker key retired", retired.status_text);
  EXPECT_EQ("", retired.user_id);
  EXPECT_EQ("400", Ask("some-other-domain", raw).status_code);
  EXPECT_EQ(2u, zap_->refused());
  EXPECT_EQ(0u, zap_->admitted());
}

}  // namespace
}  // namespace liaison::broker
