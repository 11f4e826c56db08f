#include "routing/dispatcher.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "testing/fixtures.h"

namespace liaison::broker {
namespace {

using wire::Code;

// Five agencies whose rules let everything through: these tests are about
// admission and addressing (policy decisions: policy/*_test.cc).
std::shared_ptr<const policy::PolicySet> Policies() {
  testing::TempDir dir;
  testing::WritePolicies(dir.path().string(),
                         {testing::MakeAgency("exit-a", "exit-programme", "mombasa"),
                          testing::MakeAgency("exit-b", "exit-programme", "kwale"),
                          testing::MakeAgency("youth-m", "youth-welfare", "mombasa"),
                          testing::MakeAgency("youth-k", "youth-welfare", "kwale"),
                          testing::MakeAgency("sec-m", "security-agency", "mombasa")});
  auto set = policy::PolicySet::Load(dir.path().string(), std::string(32, 's'));
  if (!set.ok()) throw std::runtime_error(set.status().ToString());
  return *set;
}

struct Address {
  std::string agency, kind, region;
};

std::vector<uint8_t> Envelope(const std::vector<Address>& to, const std::string& id = "m-1",
                              const std::string& from = "") {
  wire::EnvelopeT e;
  e.id = id;
  e.from = from;
  e.case_ref = "CASE-1";
  e.purpose = "referral-for-services";
  e.created_at = "2026-11-24T09:30:00Z";
  for (const auto& a : to) {
    auto r = std::make_unique<wire::RecipientT>();
    r->agency = a.agency;
    r->kind = a.kind;
    r->region = a.region;
    e.to.push_back(std::move(r));
  }
  wire::CaseClosureT closure;
  closure.outcome = wire::ClosureOutcome::completed;
  e.payload.Set(closure);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::vector<std::string> RecipientIds(const Admission& a) {
  std::vector<std::string> ids;
  for (const auto& d : a.deliveries) ids.push_back(d.recipient->id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

class DispatcherTest : public ::testing::Test {
 protected:
  Admission Admit(const std::vector<uint8_t>& bytes, const std::string& sender = "exit-a") {
    return dispatcher_.Admit(*policies_, *policies_->directory().Find(sender), bytes);
  }
  std::shared_ptr<const policy::PolicySet> policies_ = Policies();
  Limits limits_;
  Dispatcher dispatcher_{limits_};
};

TEST_F(DispatcherTest, AgencyIdAddressReachesThatAgencyOnly) {
  Admission a = Admit(Envelope({{"youth-m", "", ""}}));
  ASSERT_EQ(Code::ok, a.code) << a.detail;
  EXPECT_EQ(std::vector<std::string>{"youth-m"}, RecipientIds(a));
  EXPECT_TRUE(a.unresolved.empty());
  EXPECT_EQ("m-1", a.message_id);
}

TEST_F(DispatcherTest, KindAddressReachesEveryAgencyOfThatKind) {
  Admission a = Admit(Envelope({{"", "youth-welfare", ""}}));
  ASSERT_EQ(Code::ok, a.code);
  EXPECT_EQ((std::vector<std::string>{"youth-k", "youth-m"}), RecipientIds(a));
}

TEST_F(DispatcherTest, KindAndRegionNarrowsToTheRegion) {
  Admission a = Admit(Envelope({{"", "youth-welfare", "kwale"}}));
  EXPECT_EQ(std::vector<std::string>{"youth-k"}, RecipientIds(a));
}

TEST_F(DispatcherTest, KindAddressNeverLoopsBackToTheSender) {
  Admission a = Admit(Envelope({{"", "exit-programme", ""}}));
  EXPECT_EQ(std::vector<std::string>{"exit-b"}, RecipientIds(a));
}

TEST_F(DispatcherTest, OverlappingAddressesDeliverOneCopy) {
  Admission a = Admit(Envelope({{"youth-m", "", ""}, {"", "youth-welfare", "mombasa"},
                                {"", "youth-welfare", ""}}));
  ASSERT_EQ(Code::ok, a.code);
  EXPECT_EQ((std::vector<std::string>{"youth-k", "youth-m"}), RecipientIds(a));
  EXPECT_TRUE(a.unresolved.empty());
}

TEST_F(DispatcherTest, UnknownAddressesAreReportedPerAddress) {
  Admission a = Admit(Envelope({{"nobody", "", ""}, {"", "prison-service", ""},
                                {"", "youth-welfare", "nairobi"}, {"youth-m", "", ""}}));
  // (prison-service is a known kind with no agency registered)
  ASSERT_EQ(Code::ok, a.code);
  EXPECT_EQ(std::vector<std::string>{"youth-m"}, RecipientIds(a));
  ASSERT_EQ(3u, a.unresolved.size());
  EXPECT_EQ("nobody", a.unresolved[0].recipient);
  EXPECT_EQ("kind:prison-service", a.unresolved[1].recipient);
  EXPECT_EQ("kind:youth-welfare@nairobi", a.unresolved[2].recipient);
  for (const auto& u : a.unresolved) EXPECT_EQ(Code::unknown_recipient, u.code);
}

TEST_F(DispatcherTest, EachCopyNamesTheSenderAndOnlyItsRecipient) {
  Admission a = Admit(Envelope({{"", "youth-welfare", ""}}));
  ASSERT_EQ(2u, a.deliveries.size());
  for (const auto& d : a.deliveries) {
    const wire::Envelope* e = wire::VerifyEnvelope({d.envelope.data(), d.envelope.size()});
    ASSERT_NE(nullptr, e);
    EXPECT_EQ("exit-a", e->from()->str());
    ASSERT_EQ(1u, e->to()->size());
    EXPECT_EQ(d.recipient->id, e->to()->Get(0)->agency()->str());
    EXPECT_EQ("CASE-1", e->case_ref()->str());
    EXPECT_EQ(wire::Payload::CaseClosure, e->payload_type());
  }
}

TEST_F(DispatcherTest, SenderMayRepeatItsOwnIdButNotAnother) {
  EXPECT_EQ(Code::ok, Admit(Envelope({{"youth-m", "", ""}}, "m-1", "exit-a")).code);
  Admission spoofed = Admit(Envelope({{"youth-m", "", ""}}, "m-1", "sec-m"));
  EXPECT_EQ(Code::spoofed_sender, spoofed.code);
  EXPECT_TRUE(spoofed.deliveries.empty());
  EXPECT_EQ(std::string::npos, spoofed.detail.find("sec-m"));
}

TEST_F(DispatcherTest, MalformedBytesAreRejected) {
  std::vector<uint8_t> garbage = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  EXPECT_EQ(Code::malformed, Admit(garbage).code);
  EXPECT_EQ(Code::malformed, Admit({}).code);
  auto good = Envelope({{"youth-m", "", ""}});
  std::vector<uint8_t> truncated(good.begin(), good.begin() + good.size() / 2);
  EXPECT_EQ(Code::malformed, Admit(truncated).code);
  // Every single-byte corruption is either rejected or still a valid buffer;
  // it never crashes (ASan/UBSan runs make this stronger).
  for (size_t i = 0; i < good.size(); ++i) {
    auto copy = good;
    copy[i] ^= 0xff;
    (void)Admit(copy);
  }
}

TEST_F(DispatcherTest, OversizeIsRejectedBeforeParsing) {
  Limits small;
  small.max_message_bytes = 1024;
  Dispatcher d(small);
  std::vector<uint8_t> big(2048, 0);
  Admission a = d.Admit(*policies_, *policies_->directory().Find("exit-a"), big);
  EXPECT_EQ(Code::too_large, a.code);
  EXPECT_NE(std::string::npos, a.detail.find("1024"));
}

TEST_F(DispatcherTest, HeaderChecks) {
  EXPECT_EQ(Code::no_recipients, Admit(Envelope({})).code);
  EXPECT_EQ(Code::missing_field, Admit(Envelope({{"youth-m", "", ""}}, "")).code);
  EXPECT_EQ(Code::invalid_field, Admit(Envelope({{"youth-m", "", ""}}, "has space")).code);
  EXPECT_EQ(Code::invalid_field, Admit(Envelope({{"youth-m", "youth-welfare", ""}})).code);
  EXPECT_EQ(Code::invalid_field, Admit(Envelope({{"youth-m", "", "kwale"}})).code);
  EXPECT_EQ(Code::invalid_field, Admit(Envelope({{"", "", ""}})).code);

  Limits few;
  few.max_recipients = 1;
  Dispatcher d(few);
  Admission wide = d.Admit(*policies_, *policies_->directory().Find("exit-a"),
                           Envelope({{"", "youth-welfare", ""}}));
  EXPECT_EQ(Code::invalid_field, wide.code);
}

TEST_F(DispatcherTest, TimesMustBeRfc3339AndVersionKnown) {
  wire::EnvelopeT e;
  e.id = "t";
  auto r = std::make_unique<wire::RecipientT>();
  r->agency = "youth-m";
  e.to.push_back(std::move(r));
  e.payload.Set(wire::CaseClosureT());
  auto pack = [&] {
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
    return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  for (const char* good : {"2026-11-24T09:30:00Z", "2026-11-24T09:30:00.123Z",
                           "2026-11-24T09:30:00+03:00"}) {
    e.expires_at = good;
    EXPECT_EQ(Code::ok, Admit(pack()).code) << good;
  }
  for (const char* bad : {"yesterday", "2026-11-24", "2026-11-24 09:30:00Z", "2026-11-24T09:30:00",
                          "2026-13-45T99:99:99Z"}) {
    e.expires_at = bad;
    Admission a = Admit(pack());
    EXPECT_EQ(Code::invalid_field, a.code) << bad;
    EXPECT_NE(std::string::npos, a.detail.find("expires_at"));
  }
  e.expires_at.clear();
  e.schema_version = 2;
  EXPECT_EQ(Code::unsupported_version, Admit(pack()).code);
  e.schema_version = 0;
  EXPECT_EQ(Code::invalid_field, Admit(pack()).code);
  e.schema_version = 1;
  e.payload.Reset();
  EXPECT_EQ(Code::missing_field, Admit(pack()).code);
}

// A justification that is blank or too short is refused, naming the field
// and the minimum, rather than silently not invoking break-glass.
TEST_F(DispatcherTest, ABreakGlassJustificationNeedsTenCharactersOfRealText) {
  auto with = [](const std::string& justification) {
    auto env = wire::UnPackEnvelope(Envelope({{"youth-m", "", ""}}).data());
    env->break_glass = justification;
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, env.get()));
    return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  for (const std::string bad : {" ", "          ", "\t\n\r \u00a0\u3000", "\u200b\ufeff x",
                                "threat", "a b c d e f g h i"}) {
    Admission a = Admit(with(bad));
    EXPECT_EQ(Code::invalid_field, a.code) << "'" << bad << "'";
    EXPECT_NE(std::string::npos, a.detail.find("break_glass")) << a.detail;
    EXPECT_NE(std::string::npos, a.detail.find("at least 10 characters")) << a.detail;
    EXPECT_TRUE(a.deliveries.empty());
  }
  for (const std::string good : {"", "threat to life", "  0123456789  "}) {
    EXPECT_EQ(Code::ok, Admit(with(good)).code) << "'" << good << "'";
  }
}

TEST_F(DispatcherTest, APayloadTypeFromANewerSchemaIsRefused) {
  flatbuffers::FlatBufferBuilder fbb;
  auto to = std::vector<flatbuffers::Offset<wire::Recipient>>{
      wire::CreateRecipientDirect(fbb, "youth-m")};
  auto payload = wire::CreateCaseClosure(fbb).Union();
  auto env = wire::CreateEnvelopeDirect(fbb, "n-1", nullptr, &to, nullptr, nullptr, nullptr, 0,
                                        wire::Handling::unspecified, nullptr, wire::Urgency::unspecified,
                                        wire::SourceReliability::unspecified,
                                        wire::InformationAccuracy::unspecified, nullptr, nullptr, nullptr,
                                        1, static_cast<wire::Payload>(200), payload);
  wire::FinishEnvelopeBuffer(fbb, env);
  Admission a = Admit({fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()});
  EXPECT_EQ(Code::unsupported_version, a.code);
  EXPECT_TRUE(a.deliveries.empty());
}

TEST(ReceiptTest, BuildsAVerifiableReceipt) {
  auto buffer = BuildReceipt("m-9", Code::ok, "", "exit-a",
                             {{"youth-m", Code::forwarded, ""},
                              {"nobody", Code::unknown_recipient, "no-matching-agency"}});
  const wire::Receipt* r = wire::VerifyReceipt({buffer.data(), buffer.size()});
  ASSERT_NE(nullptr, r);
  EXPECT_EQ("m-9", r->message_id()->str());
  EXPECT_EQ("exit-a", r->from()->str());
  ASSERT_EQ(2u, r->recipients()->size());
  EXPECT_EQ(Code::unknown_recipient, r->recipients()->Get(1)->code());
  EXPECT_EQ("no-matching-agency", r->recipients()->Get(1)->reason()->str());
}

TEST_F(DispatcherTest, TextThatIsNotUtf8IsRefusedNamingTheField) {
  auto make = [](const std::string& notes, const std::string& region) {
    wire::EnvelopeT e;
    e.id = "m-utf8";
    e.to.push_back(std::make_unique<wire::RecipientT>());
    e.to.back()->kind = "youth-welfare";
    e.to.back()->region = region;
    wire::CaseUpdateT u;
    u.notes = notes;
    e.payload.Set(u);
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
    return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  Admission bad = Admit(make("ok \xff\xfe", "mombasa"));
  EXPECT_EQ(bad.code, wire::Code::invalid_field);
  EXPECT_EQ(bad.detail, "payload.notes: text is not valid UTF-8");
  // An overlong encoding and a lone surrogate are not UTF-8 either.
  EXPECT_EQ(Admit(make("\xc0\xaf", "mombasa")).code, wire::Code::invalid_field);
  EXPECT_EQ(Admit(make("\xed\xa0\x80", "mombasa")).code, wire::Code::invalid_field);
  // Multi-byte text is fine.
  EXPECT_EQ(Admit(make("Mwana wa Pwani \xe2\x80\x94 \xf0\x9f\x99\x82", "mombasa")).code, wire::Code::ok);
}

TEST(Utf8Test, Boundaries) {
  EXPECT_TRUE(wire::IsValidUtf8(""));
  EXPECT_TRUE(wire::IsValidUtf8("\xf4\x8f\xbf\xbf"));   // U+10FFFF
  EXPECT_FALSE(wire::IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(wire::IsValidUtf8("\xe2\x82"));            // truncated
  EXPECT_FALSE(wire::IsValidUtf8("\x80"));                // stray continuation
}

}  // namespace
}  // namespace liaison::broker
