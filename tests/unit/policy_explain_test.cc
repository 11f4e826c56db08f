// `liaison policy explain` is the broker's admission (issue 14, point 5), and
// the header's free text goes by the field rules (point 6).
#include <gtest/gtest.h>

#include <algorithm>

#include "core/admission.h"
#include "explain/explain.h"
#include "testing/fixtures.h"

namespace liaison::policy {
namespace {

using testing::MakeAgency;
using testing::TempDir;
using wire::Code;

constexpr const char* kSecret = "0123456789abcdef0123456789abcdef";

std::string Rules(const std::string& side, const std::string& fields) {
  return side + ":\n  - id: " + side + "-rule\n    messages: [CaseReferral]\n    fields:\n" + fields;
}

// A referral from exit-a to youth-b with header free text; `header` and
// `payload` replace parts of it.
std::string Message(const std::string& header = R"("purpose": "referral-for-services")",
                    const std::string& payload = R"("subject": {"given_name": "Amani"})") {
  return R"({"id": "m1", "to": [{"agency": "youth-b"}], "legal_basis": "consent",
    "consent": {"status": "given", "recorded_at": "2026-11-20T10:00:00Z",
                "scope": "Mentoring only; the mother Zawadi signed"},
    "handling": "H3", "handling_restrictions": "Do not contact the school of Amani",
    "urgency": "amber", "case_ref": "EXIT-1", "created_at": "2026-11-24T09:30:00Z",
    "break_glass": "Amani named a venue", )" +
         header + R"(, "payload_type": "CaseReferral", "payload": {)" + payload + "}}";
}

std::vector<uint8_t> Binary(const std::string& json) {
  auto b = wire::JsonCodec(wire::JsonCodec::Root::kEnvelope).ToBinary(json, "test");
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? *b : std::vector<uint8_t>{};
}

class PolicyExplainTest : public ::testing::Test {
 protected:
  // exit-a releases with `release_fields`, youth-b accepts with `accept_fields`.
  void Load(const std::string& release_fields, const std::string& accept_fields) {
    auto a = MakeAgency("exit-a", "exit-programme", "mombasa");
    auto b = MakeAgency("youth-b", "youth-welfare", "mombasa");
    a.rules = Rules("release", release_fields);
    b.rules = Rules("accept", accept_fields);
    testing::WritePolicies(dir_.path().string(), {a, b});
    auto set = PolicySet::Load(dir_.path().string(), kSecret);
    ASSERT_TRUE(set.ok()) << set.status().ToString();
    set_ = *set;
  }
  Explanation ExplainJson(const std::string& json) {
    auto e = Explain(*set_, *set_->directory().Find("exit-a"), *set_->directory().Find("youth-b"),
                     Binary(json));
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(*e) : Explanation{};
  }
  // What the broker's dispatcher makes of the same message.
  broker::Admission Admit(const std::string& json) {
    const auto bytes = Binary(json);
    return broker::Dispatcher(broker::Limits{}).Admit(*set_, *set_->directory().Find("exit-a"), bytes);
  }
  std::string LoadError(const std::string& release_fields) {
    auto a = MakeAgency("exit-a", "exit-programme", "mombasa");
    auto b = MakeAgency("youth-b", "youth-welfare", "mombasa");
    a.rules = Rules("release", release_fields);
    b.rules = Rules("accept", "      others: allow\n");
    testing::WritePolicies(dir_.path().string(), {a, b});
    auto set = PolicySet::Load(dir_.path().string(), kSecret);
    EXPECT_FALSE(set.ok());
    return set.ok() ? "" : set.status().message();
  }

  TempDir dir_;
  std::shared_ptr<const PolicySet> set_;
};

const FieldExplanation* FieldOf(const Explanation& e, const std::string& path) {
  for (const auto& f : e.fields) {
    if (*f.path == path) return &f;
  }
  return nullptr;
}

TEST_F(PolicyExplainTest, APurposeMissingFromTheVocabularyIsRejectedAsByTheBroker) {
  Load("      others: allow\n", "      others: allow\n");
  const std::string json = Message(R"("purpose": "no-such-purpose")");
  const Explanation e = ExplainJson(json);
  EXPECT_TRUE(e.rejected());
  EXPECT_EQ(Code::invalid_field, e.code);
  EXPECT_EQ(Admit(json).code, e.code);
  EXPECT_NE(std::string::npos, e.reason.find("purpose"));
  EXPECT_TRUE(e.received.empty());
  EXPECT_NE(std::string::npos, FormatExplanation(e, *wire::VerifyEnvelope(Binary(json))).find("REJECTED (invalid_field)"));
}

// A permission message is about a thread, which explain has none of: the
// broker's answer (refused: no thread) and a note that no rule decides it.
TEST_F(PolicyExplainTest, APermissionMessageIsShownAsNotDecidedByRules) {
  Load("      others: allow\n", "      others: allow\n");
  for (const std::string type : {"PermissionRequest", "PermissionGrant"}) {
    const std::string json = R"({"id": "p1", "to": [{"agency": "youth-b"}], "purpose": "referral-for-services",
      "case_ref": "EXIT-1", "payload_type": ")" + type + R"(", "payload": {"agencies": ["youth-b"]}})";
    const Explanation e = ExplainJson(json);
    EXPECT_TRUE(e.rejected()) << type;
    EXPECT_EQ(Admit(json).code, e.code) << type;
    const std::string text = FormatExplanation(e, *wire::VerifyEnvelope(Binary(json)));
    EXPECT_NE(std::string::npos, text.find("no release or accept rule decides a " + type)) << text;
  }
}

TEST_F(PolicyExplainTest, AnUnreadableDateIsShownDroppedAsTheBrokerDropsIt) {
  Load("      risk.assessed_at: generalize(year)\n      subject.given_name: allow\n",
       "      others: allow\n");
  const std::string json =
      Message(R"("purpose": "referral-for-services")",
              R"("subject": {"given_name": "Amani"}, "risk": {"assessed_at": "last Tuesday"})");
  const Explanation e = ExplainJson(json);
  ASSERT_TRUE(e.released());
  const FieldExplanation* f = FieldOf(e, "risk.assessed_at");
  ASSERT_NE(nullptr, f);
  EXPECT_EQ("drop", ActionText(f->action));
  EXPECT_TRUE(f->values.empty());
  EXPECT_NE(std::string::npos, f->note.find("generalize(year)"));
  const broker::Admission a = Admit(json);
  ASSERT_EQ(1u, a.deliveries.size());
  bool broker_dropped = false;
  for (const std::string* p : a.deliveries[0].outcome.dropped) broker_dropped |= *p == "risk.assessed_at";
  EXPECT_TRUE(broker_dropped);
}

TEST_F(PolicyExplainTest, TheCopyShownIsTheBrokersCopyByteForByte) {
  Load("      subject.given_name: pseudonymize\n      subject.national_id: mask(last:2)\n"
       "      subject.date_of_birth: generalize(age-band)\n      header.consent.scope: allow\n",
       "      subject: allow\n      header: allow\n");
  const std::string json = Message(
      R"("purpose": "referral-for-services")",
      R"("subject": {"given_name": "", "national_id": "   ", "date_of_birth": "31/12/2009", "family_name": "E"})");
  const Explanation e = ExplainJson(json);
  const broker::Admission a = Admit(json);
  ASSERT_EQ(1u, a.deliveries.size());
  ASSERT_TRUE(e.released());
  // Byte for byte but for the thread reference, which every copy gets anew.
  auto without_thread = [](const uint8_t* data) {
    std::unique_ptr<wire::EnvelopeT> copy(wire::GetEnvelope(data)->UnPack());
    EXPECT_EQ(32u, copy->thread.size());
    copy->thread.clear();
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, copy.get()));
    return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  };
  EXPECT_EQ(without_thread(a.deliveries[0].envelope.data()), without_thread(e.received.data()));
  const auto values = LeafValues(*SchemaLayout::Get().For(wire::Payload::CaseReferral),
                                 *wire::VerifyEnvelope(e.received));
  const auto& layout = *SchemaLayout::Get().For(wire::Payload::CaseReferral);
  for (const auto& f : e.fields) {
    size_t i = 0;
    while (i < layout.leaves.size() && &layout.leaves[i].path != f.path) ++i;
    ASSERT_LT(i, layout.leaves.size());
    EXPECT_EQ(values[i], f.values) << *f.path;
    EXPECT_EQ(f.action.kind == ActionKind::kDrop, f.values.empty()) << *f.path;
  }
  EXPECT_EQ("drop", ActionText(FieldOf(e, "subject.date_of_birth")->action));
  EXPECT_EQ("drop", ActionText(FieldOf(e, "subject.family_name")->action));  // not released
}

TEST_F(PolicyExplainTest, EachFieldNamesTheLinesOfBothRules) {
  Load("      subject.given_name: allow\n      others: drop\n",
       "      reason: drop\n      subject.*: allow\n");
  const Explanation e = ExplainJson(Message());
  const FieldExplanation* f = FieldOf(e, "subject.given_name");
  ASSERT_NE(nullptr, f);
  const std::string release_file = (dir_.path() / "agencies/exit-a.yaml").string();
  const std::string accept_file = (dir_.path() / "agencies/youth-b.yaml").string();
  EXPECT_EQ("subject.given_name: allow", f->release.entry);
  EXPECT_EQ("subject.*: allow", f->accept.entry);
  EXPECT_EQ(0u, f->release.at.rfind(release_file + ":", 0)) << f->release.at;
  EXPECT_EQ(0u, f->accept.at.rfind(accept_file + ":", 0)) << f->accept.at;
  // The lines are the entries' own: the line that says so in each file.
  auto line_of = [](const std::string& file, const std::string& text) {
    const std::string all = testing::ReadText(file);
    const size_t at = all.find(text);
    return std::to_string(1 + std::count(all.begin(), all.begin() + at, '\n'));
  };
  EXPECT_EQ(release_file + ":" + line_of(release_file, "subject.given_name: allow"), f->release.at);
  EXPECT_EQ(accept_file + ":" + line_of(accept_file, "subject.*: allow"), f->accept.at);
  const FieldExplanation* glass = FieldOf(e, "header.break_glass");
  ASSERT_NE(nullptr, glass);
  EXPECT_EQ("others: drop", glass->release.entry);
  EXPECT_EQ(release_file + ":" + line_of(release_file, "others: drop"), glass->release.at);
  EXPECT_EQ("(not named)", glass->accept.entry);
  const std::string text = FormatExplanation(e, *wire::VerifyEnvelope(Binary(Message())));
  EXPECT_NE(std::string::npos, text.find("release rule 'release-rule' " + f->release.at));
  EXPECT_NE(std::string::npos, text.find("accept rule 'accept-rule' " + f->accept.at));
}

TEST_F(PolicyExplainTest, AMessageWithoutIdOrAddressIsExplainedForTheRecipient) {
  Load("      others: allow\n", "      others: allow\n");
  const Explanation e = ExplainJson(
      R"({"purpose": "case-coordination", "consent": {"status": "given", "scope": ""},
          "payload_type": "CaseReferral", "payload": {"reason": ""}})");
  ASSERT_TRUE(e.released());
  const wire::Envelope* r = wire::VerifyEnvelope(e.received);
  ASSERT_EQ(1u, r->to()->size());
  EXPECT_EQ("youth-b", r->to()->Get(0)->agency()->str());
  // An empty text stays an empty text, as the sender wrote it.
  ASSERT_NE(nullptr, r->consent()->scope());
  EXPECT_EQ("", r->consent()->scope()->str());
  EXPECT_EQ(std::vector<std::string>{""}, FieldOf(e, "reason")->values);
}

TEST_F(PolicyExplainTest, HeaderFreeTextIsDroppedUnlessBothRulesAllowIt) {
  // The sender names payload fields only: no header text leaves.
  Load("      subject.given_name: allow\n", "      others: allow\n");
  const broker::Admission a = Admit(Message());
  ASSERT_EQ(1u, a.deliveries.size());
  const wire::Envelope* r = wire::GetEnvelope(a.deliveries[0].envelope.data());
  EXPECT_EQ(nullptr, r->break_glass());
  EXPECT_EQ(nullptr, r->handling_restrictions());
  ASSERT_NE(nullptr, r->consent());
  EXPECT_EQ(nullptr, r->consent()->scope());
  // The structured header passes as it is.
  EXPECT_EQ(wire::ConsentStatus::given, r->consent()->status());
  EXPECT_EQ("2026-11-20T10:00:00Z", r->consent()->recorded_at()->str());
  EXPECT_EQ(wire::Handling::H3, r->handling());
  EXPECT_EQ(wire::Urgency::amber, r->urgency());
  EXPECT_EQ("referral-for-services", r->purpose()->str());
  EXPECT_EQ("consent", r->legal_basis()->str());
  EXPECT_EQ("EXIT-1", r->case_ref()->str());
  EXPECT_EQ("2026-11-24T09:30:00Z", r->created_at()->str());
  std::vector<std::string> dropped;
  for (const std::string* p : a.deliveries[0].outcome.dropped) dropped.push_back(*p);
  for (const char* p : {"header.consent.scope", "header.handling_restrictions", "header.break_glass"}) {
    EXPECT_NE(dropped.end(), std::find(dropped.begin(), dropped.end(), p)) << p;
  }
}

TEST_F(PolicyExplainTest, HeaderFreeTextTakesEveryTextAction) {
  Load("      header.break_glass: allow\n      header.consent.scope: pseudonymize\n"
       "      header.handling_restrictions: mask(last:6)\n",
       "      header.*: allow\n");
  const broker::Admission a = Admit(Message());
  ASSERT_EQ(1u, a.deliveries.size());
  const wire::Envelope* r = wire::GetEnvelope(a.deliveries[0].envelope.data());
  EXPECT_EQ("Amani named a venue", r->break_glass()->str());
  EXPECT_EQ(Pseudonym(set_->Find("youth-b")->pseudonym_key, "header.consent.scope",
                      "Mentoring only; the mother Zawadi signed"),
            r->consent()->scope()->str());
  const std::string masked = r->handling_restrictions()->str();
  EXPECT_EQ(" Amani", masked.substr(masked.size() - 6));
  EXPECT_EQ(std::string::npos, masked.find("school"));
  const auto& o = a.deliveries[0].outcome;
  std::vector<std::string> released, transformed;
  for (const std::string* p : o.released) released.push_back(*p);
  for (const std::string* p : o.transformed) transformed.push_back(*p);
  EXPECT_NE(released.end(), std::find(released.begin(), released.end(), "header.break_glass"));
  EXPECT_NE(transformed.end(), std::find(transformed.begin(), transformed.end(), "header.consent.scope"));
  // The accept side alone can withhold it too.
  Load("      header: allow\n", "      header.break_glass: drop\n      header.consent: allow\n");
  const broker::Admission a2 = Admit(Message());  // owns the copy r2 points into
  ASSERT_EQ(1u, a2.deliveries.size());
  const wire::Envelope* r2 = wire::GetEnvelope(a2.deliveries[0].envelope.data());
  EXPECT_EQ(nullptr, r2->break_glass());
  EXPECT_EQ("Mentoring only; the mother Zawadi signed", r2->consent()->scope()->str());
  EXPECT_EQ(nullptr, r2->handling_restrictions());  // not named on the accept side
}

TEST_F(PolicyExplainTest, BreakGlassRulesStillMatchWhenTheJustificationIsWithheld) {
  auto a = MakeAgency("exit-a", "exit-programme", "mombasa");
  auto b = MakeAgency("youth-b", "youth-welfare", "mombasa");
  a.rules = "release:\n  - id: bg\n    messages: [CaseReferral]\n    break_glass: true\n"
            "    fields:\n      subject.given_name: allow\n";
  b.rules = Rules("accept", "      others: allow\n");
  testing::WritePolicies(dir_.path().string(), {a, b});
  auto set = PolicySet::Load(dir_.path().string(), kSecret);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  set_ = *set;
  const broker::Admission admission = Admit(Message());
  ASSERT_EQ(1u, admission.deliveries.size());
  EXPECT_TRUE(admission.deliveries[0].outcome.break_glass);
  EXPECT_EQ(nullptr, wire::GetEnvelope(admission.deliveries[0].envelope.data())->break_glass());
}

TEST_F(PolicyExplainTest, HeaderPathsAreCheckedWhenLoaded) {
  std::string error = LoadError("      header.consent.status: allow\n");
  EXPECT_NE(std::string::npos, error.find("agencies/exit-a.yaml:"));
  EXPECT_NE(std::string::npos, error.find("header.consent.status"));
  EXPECT_NE(std::string::npos, error.find("the other header fields pass unchanged")) << error;
  error = LoadError("      header.break_glas: allow\n");
  EXPECT_NE(std::string::npos, error.find("did you mean 'header.break_glass'")) << error;
  error = LoadError("      header.break_glass: generalize(year)\n");
  EXPECT_NE(std::string::npos, error.find("does not fit 'header.break_glass', which is a text field")) << error;
  error = LoadError("      purpose: allow\n");
  EXPECT_NE(std::string::npos, error.find("no field 'purpose'")) << error;
  // file:line:column of the entry.
  EXPECT_NE(std::string::npos, error.find("exit-a.yaml:")) << error;
}

TEST(SchemaLayoutHeaderTest, EveryLayoutEndsWithTheHeaderText) {
  for (size_t tag = 1; tag < kPayloadTypes; ++tag) {
    const PayloadLayout& layout = *SchemaLayout::Get().For(static_cast<wire::Payload>(tag));
    ASSERT_EQ(layout.leaves.size(), layout.first_header_leaf + kHeaderTextPaths.size());
    for (size_t i = 0; i < kHeaderTextPaths.size(); ++i) {
      const Leaf& leaf = layout.leaves[layout.HeaderLeaf(static_cast<HeaderText>(i))];
      EXPECT_EQ(kHeaderTextPaths[i], leaf.path);
      EXPECT_EQ(LeafKind::kString, leaf.kind);
      EXPECT_FALSE(leaf.is_date);
    }
  }
}

}  // namespace
}  // namespace liaison::policy
