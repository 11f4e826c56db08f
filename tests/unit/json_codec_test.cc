#include <gtest/gtest.h>

#include <filesystem>

#include "liaison/wire.h"
#include "testing/fixtures.h"

namespace liaison::wire {
namespace {

const std::string kScenarios = std::string(LIAISON_SOURCE_DIR) + "/policies/tests/messages";

// JSON -> FlatBuffer -> JSON -> FlatBuffer must be a fixed point.
void ExpectRoundTrip(const std::string& json, const std::string& name, Payload expected_type) {
  JsonCodec codec(JsonCodec::Root::kEnvelope);
  auto binary = codec.ToBinary(json, name);
  ASSERT_TRUE(binary.ok()) << binary.status().ToString();
  const Envelope* env = VerifyEnvelope(*binary);
  ASSERT_NE(nullptr, env) << name;
  EXPECT_EQ(expected_type, env->payload_type()) << name;
  auto text = codec.ToJson(*binary, true);
  ASSERT_TRUE(text.ok());
  auto again = codec.ToBinary(*text, name + " (printed)");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto text_again = codec.ToJson(*again, true);
  ASSERT_TRUE(text_again.ok());
  EXPECT_EQ(*text, *text_again) << name;
}

TEST(JsonCodecTest, EveryScenarioFileRoundTrips) {
  const std::vector<std::pair<std::string, Payload>> files = {
      {"01-exit-to-youth-welfare.json", Payload::CaseReferral},
      {"02-exit-to-security-break-glass.json", Payload::CaseReferral},
      {"03-health-response.json", Payload::ReferralResponse},
      {"04-prison-handover.json", Payload::CaseReferral},
      {"05-incident-report.json", Payload::IncidentReport},
      {"06-erasure.json", Payload::ErasureRequest}};
  for (const auto& [file, type] : files) {
    ExpectRoundTrip(testing::ReadText(kScenarios + "/" + file), file, type);
  }
}

TEST(JsonCodecTest, CaseUpdateAndClosureRoundTrip) {
  ExpectRoundTrip(R"({"id": "u1", "payload_type": "CaseUpdate", "payload": {
      "in_reply_to": "r1", "status": "in_progress",
      "milestones": [{"name": "first session", "reached_at": "2026-11-20T10:00:00Z"}],
      "notes": "n", "risk": {"instrument": "erg22_plus", "level": "low"}}})",
                  "update", Payload::CaseUpdate);
  ExpectRoundTrip(R"({"id": "c1", "payload_type": "CaseClosure",
      "payload": {"outcome": "disengaged", "summary": "s"}})",
                  "closure", Payload::CaseClosure);
}

TEST(JsonCodecTest, ScalarDetailsSurvive) {
  JsonCodec codec(JsonCodec::Root::kEnvelope);
  auto binary = codec.ToBinary(
      testing::ReadText(kScenarios + "/03-health-response.json"), "03");
  ASSERT_TRUE(binary.ok());
  const auto* response = VerifyEnvelope(*binary)->payload_as_ReferralResponse();
  ASSERT_NE(nullptr, response);
  ASSERT_TRUE(response->health()->fit_for_programme().has_value());
  EXPECT_TRUE(*response->health()->fit_for_programme());
}

TEST(JsonCodecTest, ErrorsNameTheFieldAndLine) {
  JsonCodec codec(JsonCodec::Root::kEnvelope);
  auto unknown = codec.ToBinary("{\n  \"id\": \"x\",\n  \"subjekt\": 1\n}", "msg.json");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(std::string::npos, unknown.status().message().find("subjekt"));
  EXPECT_NE(std::string::npos, unknown.status().message().find("msg.json"));
  EXPECT_NE(std::string::npos, unknown.status().message().find("3"));  // the line

  auto bad_enum = codec.ToBinary(R"({"urgency": "purple"})", "u.json");
  ASSERT_FALSE(bad_enum.ok());
  EXPECT_NE(std::string::npos, bad_enum.status().message().find("purple"));

  EXPECT_FALSE(codec.ToBinary("{ not json", "x").ok());
  // The codec stays usable after errors.
  EXPECT_TRUE(codec.ToBinary(R"({"id": "ok"})", "ok").ok());
}

TEST(JsonCodecTest, ToJsonRejectsForeignBytes) {
  JsonCodec codec(JsonCodec::Root::kEnvelope);
  std::vector<uint8_t> garbage(64, 0xab);
  EXPECT_FALSE(codec.ToJson(garbage, false).ok());
}

TEST(JsonCodecTest, ReceiptPrintsCodesByName) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<RecipientReceipt>> rs = {
      CreateRecipientReceiptDirect(fbb, "b", Code::recipient_offline, "not-connected")};
  FinishReceiptBuffer(fbb, CreateReceiptDirect(fbb, "m1", Code::ok, nullptr, "a", nullptr,
                                               "2026-11-24T00:00:00Z", &rs));
  JsonCodec codec(JsonCodec::Root::kReceipt);
  auto text = codec.ToJson({fbb.GetBufferPointer(), fbb.GetSize()}, false);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(std::string::npos, text->find("\"recipient_offline\""));
  EXPECT_EQ(std::string::npos, text->find('\n'));  // one line when not pretty
}

TEST(WireTest, MessageIdsAreUlidsAndUnique) {
  std::string a = NewMessageId(), b = NewMessageId();
  EXPECT_EQ(26u, a.size());
  EXPECT_NE(a, b);
  EXPECT_LE(a[0], '7');
  EXPECT_EQ(std::string::npos, a.find_first_not_of("0123456789ABCDEFGHJKMNPQRSTVWXYZ"));
}

}  // namespace
}  // namespace liaison::wire
