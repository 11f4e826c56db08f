#include "core/admission.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "policy/policy_set.h"
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

// The field is named by its path through tables, unions and vectors, as the
// verifying walk found it (the message is read once, not walked again).
TEST_F(DispatcherTest, NotUtf8InsideVectorsIsNamedWithTheElement) {
  wire::EnvelopeT e;
  e.id = "m-utf8-vectors";
  for (const char* region : {"mombasa", "kil\xffifi"}) {
    e.to.push_back(std::make_unique<wire::RecipientT>());
    e.to.back()->kind = "youth-welfare";
    e.to.back()->region = region;
  }
  wire::CaseReferralT referral;
  referral.subject = std::make_unique<wire::SubjectT>();
  referral.subject->aliases = {"Juma", "Ju\xc0\xafma"};
  e.payload.Set(std::move(referral));
  auto bytes = [&e] {
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
    return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  // Fields in the schema's (name) order: payload before to.
  const wire::EnvelopeCheck check = wire::VerifyEnvelopeWithin(bytes(), 1 << 20);
  ASSERT_NE(nullptr, check.envelope);
  EXPECT_EQ("payload.subject.aliases[1]", check.non_utf8_field);
  e.payload.AsCaseReferral()->subject->aliases[1] = "Juma";
  EXPECT_EQ("to[1].region", wire::VerifyEnvelopeWithin(bytes(), 1 << 20).non_utf8_field);
  e.to[1]->region = "kilifi";
  EXPECT_EQ("", wire::VerifyEnvelopeWithin(bytes(), 1 << 20).non_utf8_field);
}

// The pipeline verifies each message once, with VerifyEnvelope's budget,
// and hands that check to admission, whose own budget may be narrower
// (limits.max_message_bytes): both ways reach the same decision.
TEST_F(DispatcherTest, ACheckMadeByTheCallerGivesTheSameDecision) {
  const std::vector<uint8_t> shared = testing::SharedOffsetBalloon("m-two", "youth-m", 1000, 3);
  const wire::EnvelopeCheck wide = wire::VerifyEnvelopeWithin(shared, shared.size() * wire::kMaxExpansion);
  ASSERT_NE(nullptr, wide.envelope);
  Limits narrow;
  narrow.max_message_bytes = shared.size() + 100;  // the bytes fit, their expansion does not
  ASSERT_GT(wide.expanded, narrow.max_message_bytes);
  const Agency& sender = *policies_->directory().Find("exit-a");
  for (const Limits& limits : {narrow, Limits{}}) {
    Dispatcher d(limits);
    const Admission own = d.Admit(*policies_, sender, shared);
    const Admission given = d.Admit(*policies_, sender, shared, {}, nullptr, &wide);
    EXPECT_EQ(own.code, given.code) << limits.max_message_bytes;
    EXPECT_EQ(own.detail, given.detail);
    EXPECT_EQ(own.deliveries.size(), given.deliveries.size());
  }
  EXPECT_EQ(Code::too_large, Dispatcher(narrow).Admit(*policies_, sender, shared, {}, nullptr, &wide).code);
  EXPECT_EQ(Code::ok, Dispatcher(Limits{}).Admit(*policies_, sender, shared, {}, nullptr, &wide).code);
}

TEST(Utf8Test, Boundaries) {
  EXPECT_TRUE(wire::IsValidUtf8(""));
  EXPECT_TRUE(wire::IsValidUtf8("\xf4\x8f\xbf\xbf"));   // U+10FFFF
  EXPECT_FALSE(wire::IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(wire::IsValidUtf8("\xe2\x82"));            // truncated
  EXPECT_FALSE(wire::IsValidUtf8("\x80"));                // stray continuation
}

// Shared offsets: one Milestone referenced many times. Each reference counts
// once per use (a rewrite copies it per use), so 240 KB of bytes that stand
// for 2 GB are refused before anything copies or walks them in full.
TEST_F(DispatcherTest, AMessageThatExpandsPastTheLimitThroughSharedOffsetsIsTooLarge) {
  const std::vector<uint8_t> balloon = testing::SharedOffsetBalloon("m-big", "youth-m", 200 * 1024, 10000);
  ASSERT_LT(balloon.size(), limits_.max_message_bytes);
  flatbuffers::Verifier plain(balloon.data(), balloon.size(), 64, 1000000);
  ASSERT_TRUE(plain.VerifyBuffer<wire::Envelope>(wire::EnvelopeIdentifier()));  // valid FlatBuffers
  Admission a = Admit(balloon);
  EXPECT_EQ(Code::too_large, a.code) << a.detail;
  EXPECT_NE(std::string::npos, a.detail.find("expands past the limit")) << a.detail;
  EXPECT_TRUE(a.deliveries.empty());

  const wire::EnvelopeCheck check = wire::VerifyEnvelopeWithin(balloon, limits_.max_message_bytes);
  EXPECT_TRUE(check.too_large);
  EXPECT_EQ(nullptr, check.envelope);
  // The walk stopped as soon as the budget was spent, not after 2 GB.
  EXPECT_LT(check.expanded, limits_.max_message_bytes + 256 * 1024);
}

TEST_F(DispatcherTest, ALittleSharingWithinTheLimitIsAcceptedAndCopiedPerReference) {
  // Legal and harmless: the copy holds each reference's value in full.
  const std::vector<uint8_t> shared = testing::SharedOffsetBalloon("m-two", "youth-m", 1000, 3);
  const wire::EnvelopeCheck check = wire::VerifyEnvelopeWithin(shared, limits_.max_message_bytes);
  ASSERT_NE(nullptr, check.envelope);
  EXPECT_GT(check.expanded, 3000u);
  Admission a = Admit(shared);
  ASSERT_EQ(Code::ok, a.code) << a.detail;
  ASSERT_EQ(1u, a.deliveries.size());
  const auto* copy = flatbuffers::GetRoot<wire::Envelope>(a.deliveries[0].envelope.data());
  ASSERT_EQ(3u, copy->payload_as_CaseUpdate()->milestones()->size());
  for (const auto* m : *copy->payload_as_CaseUpdate()->milestones()) EXPECT_EQ(1000u, m->name()->size());
}

TEST(ExpansionTest, AMessageWithoutSharingExpandsToNoMoreThanItsSize) {
  // Every example message, as the CLI converts it: the count never exceeds
  // the bytes, so no message within the size limit is refused by it.
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(LIAISON_SOURCE_DIR) +
                                                               "/policies/tests/messages")) {
    if (entry.path().extension() != ".json") continue;
    auto binary = codec.ToBinary(testing::ReadText(entry.path().string()), entry.path().string());
    ASSERT_TRUE(binary.ok()) << binary.status().ToString();
    const wire::EnvelopeCheck check = wire::VerifyEnvelopeWithin(*binary, binary->size());
    ASSERT_NE(nullptr, check.envelope) << entry.path();
    EXPECT_LE(check.expanded, binary->size()) << entry.path();
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

TEST(ExpansionTest, TruncatedAndCorruptBuffersAreMalformedNotTooLarge) {
  const std::vector<uint8_t> good = testing::SharedOffsetBalloon("m", "youth-m", 100, 4);
  // (The last bytes may be padding: a buffer cut there can still verify.)
  for (size_t cut : {size_t{8}, size_t{16}, good.size() / 2}) {
    std::vector<uint8_t> bytes(good.begin(), good.begin() + cut);
    const wire::EnvelopeCheck check = wire::VerifyEnvelopeWithin(bytes, 1 << 20);
    EXPECT_EQ(nullptr, check.envelope) << cut;
    EXPECT_FALSE(check.too_large) << cut;
  }
  // Every single-byte corruption either still verifies or is refused; none
  // crashes or reads outside the buffer (ASan runs this too).
  for (size_t i = 0; i < good.size(); ++i) {
    std::vector<uint8_t> bytes = good;
    bytes[i] ^= 0xff;
    const wire::EnvelopeCheck check = wire::VerifyEnvelopeWithin(bytes, 1 << 20);
    if (check.envelope) {
      EXPECT_FALSE(check.too_large);
    }
  }
}

// Found by fuzz_inbound: a payload value beside the tag NONE made the walk
// index the schema's objects with NONE's -1.
TEST_F(DispatcherTest, APayloadBesideTheTagNoneIsRefusedNotRead) {
  flatbuffers::FlatBufferBuilder fbb;
  auto update = wire::CreateCaseUpdate(fbb, fbb.CreateString("x"));
  auto id = fbb.CreateString("m-none");
  wire::EnvelopeBuilder envelope(fbb);
  envelope.add_id(id);
  envelope.add_payload(update.Union());  // payload_type stays NONE
  wire::FinishEnvelopeBuffer(fbb, envelope.Finish());
  const std::vector<uint8_t> bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  const wire::EnvelopeCheck check = wire::VerifyEnvelopeWithin(bytes, 1 << 20);
  EXPECT_FALSE(check.too_large);
  const Admission a = Admit(bytes);
  EXPECT_NE(Code::ok, a.code);
  EXPECT_TRUE(a.deliveries.empty());
}

// Found by fuzz_inbound: a vtable of 2 bytes (its size field only) at the
// buffer's end passes the verifier's table-start check; the walk read the
// table's size after it (ASan, make test-asan: heap-buffer-overflow).
TEST_F(DispatcherTest, AVtableTooShortToHoldTheTableSizeIsMalformed) {
  std::vector<uint8_t> bytes(14, 0);
  bytes[0] = 8;  // the root table at 8
  const char* id = wire::EnvelopeIdentifier();
  std::copy(id, id + 4, bytes.begin() + 4);
  const int32_t to_vtable = -4;  // the vtable at 8 - (-4) = 12
  std::memcpy(bytes.data() + 8, &to_vtable, sizeof to_vtable);
  bytes[12] = 2;  // vtable size 2: no room for the table's size
  bytes.shrink_to_fit();
  const wire::EnvelopeCheck check = wire::VerifyEnvelopeWithin(bytes, 1 << 20);
  EXPECT_EQ(nullptr, check.envelope);
  EXPECT_FALSE(check.too_large);
  const Admission a = Admit(bytes);
  EXPECT_NE(Code::ok, a.code);
  EXPECT_TRUE(a.deliveries.empty());
}

}  // namespace
}  // namespace liaison::broker
