// Issue 14: what two rules reveal together, masks, blank values, break-glass
// text and the date on which a subject's age is counted. Each test drives the
// real loader and engine (PolicySet::Load, Explain, Rewrite) on policy files
// written to a temporary directory.
#include <gtest/gtest.h>

#include "explain/explain.h"
#include "policy/engine.h"
#include "testing/fixtures.h"

namespace liaison::policy {
namespace {

constexpr const char* kSecret = "0123456789abcdef0123456789abcdef";

std::string Rule(const std::string& side, const std::string& fields) {
  return side + ":\n  - id: " + (side == "release" ? "r" : "a") +
         "\n    messages: [CaseReferral]\n    fields: {" + fields + "}\n";
}

// A referral whose subject and dates the test sets.
std::string Referral(const std::string& subject, const std::string& created_at = "2026-11-24T09:30:00Z",
                     const std::string& risk = R"({"level": "moderate"})") {
  return R"({"id": "m1", "purpose": "referral-for-services", "created_at": ")" + created_at +
         R"(", "payload_type": "CaseReferral", "payload": {"subject": )" + subject +
         R"(, "risk": )" + risk + R"(, "reason": "wants help"}})";
}

class PolicyCombineTest : public ::testing::Test {
 protected:
  StatusOr<std::shared_ptr<const PolicySet>> Load(const std::string& release,
                                                  const std::string& accept) {
    auto a = testing::MakeAgency("exit-a", "exit-programme", "mombasa");
    auto b = testing::MakeAgency("youth-b", "youth-welfare", "mombasa");
    a.rules = release;
    b.rules = accept;
    testing::WritePolicies(dir_.path().string(), {a, b});
    return PolicySet::Load(dir_.path().string(), kSecret);
  }

  // What youth-b receives of `json` from exit-a, with the receipt's lists.
  struct Received {
    std::vector<uint8_t> bytes;
    FieldReport report;
    const wire::CaseReferral* referral() const {
      const wire::Envelope* env = wire::VerifyEnvelope(bytes);
      return env ? env->payload_as_CaseReferral() : nullptr;
    }
    bool Lists(const std::vector<const std::string*>& list, const std::string& path) const {
      return std::any_of(list.begin(), list.end(), [&](const std::string* s) { return *s == path; });
    }
  };
  Received Send(const std::string& release, const std::string& accept, const std::string& json) {
    auto set = Load(release, accept);
    EXPECT_TRUE(set.ok()) << set.status().ToString();
    Received out;
    if (!set.ok()) return out;
    wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
    auto bytes = codec.ToBinary(json, "test");
    EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
    const wire::Envelope* env = wire::VerifyEnvelope(*bytes);
    const auto& exit = (*set)->For(*(*set)->directory().Find("exit-a"));
    const auto& youth = (*set)->For(*(*set)->directory().Find("youth-b"));
    const MessageFacts facts = ExtractFacts(*env, (*set)->vocabulary());
    const Decision d = Decide(exit, youth, facts);
    EXPECT_TRUE(d.allowed());
    std::array<Action, kMaxLeaves> actions;
    CombinePlans(d, facts.type, actions.data());
    flatbuffers::FlatBufferBuilder fbb;
    EXPECT_TRUE(Rewrite(*env, "exit-a", "youth-b", actions.data(), youth.pseudonym_key, facts, fbb,
                        &out.report).ok());
    out.bytes.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    return out;
  }

  testing::TempDir dir_;
};

// ---- 1. Actions combine by what each reveals ----------------------------

// The issue's case: a group mask hides a date's year, the other side keeps
// only the year; together the recipient must learn neither.
TEST_F(PolicyCombineTest, AGroupMaskOnADateWithYearOnTheOtherSideRevealsNoYear) {
  const std::string json = Referral(R"({"given_name": "Amani", "date_of_birth": "2009-05-14"})",
                                    "2026-11-24T09:30:00Z",
                                    R"({"level": "moderate", "assessed_at": "2026-10-01T10:00:00Z"})");
  const std::string year = "subject.date_of_birth: generalize(year), risk.assessed_at: generalize(year), "
                           "others: allow";
  const std::string mask = "subject: mask(last:5), risk: mask(last:5), others: allow";
  for (const auto& [release, accept] : {std::pair{mask, year}, std::pair{year, mask}}) {
    Received r = Send(Rule("release", release), Rule("accept", accept), json);
    ASSERT_NE(nullptr, r.referral());
    EXPECT_EQ(nullptr, r.referral()->subject()->date_of_birth()) << release << " / " << accept;
    const wire::RiskAssessment* risk = r.referral()->risk();
    EXPECT_TRUE(risk == nullptr || risk->assessed_at() == nullptr) << release << " / " << accept;
    EXPECT_TRUE(r.Lists(r.report.dropped, "subject.date_of_birth"));
    EXPECT_FALSE(r.Lists(r.report.transformed, "subject.date_of_birth"));
    EXPECT_EQ("***ni", r.referral()->subject()->given_name()->str());  // text still masked
  }
}

// Each side reveals something the other hides: no single action shows only
// what both show, so the field is dropped.
TEST_F(PolicyCombineTest, ActionsThatRevealDifferentPartsAreDropped) {
  const std::string json = Referral(
      R"({"given_name": "Amani", "national_id": "12345678", "date_of_birth": "2009-05-14"})");
  Received r = Send(Rule("release", "subject.national_id: pseudonymize, "
                                    "subject.date_of_birth: generalize(year), others: allow"),
                    Rule("accept", "subject.national_id: mask(last:4), "
                                   "subject.date_of_birth: generalize(age-band), others: allow"),
                    json);
  ASSERT_NE(nullptr, r.referral());
  EXPECT_EQ(nullptr, r.referral()->subject()->national_id());    // token vs last 4 digits
  EXPECT_EQ(nullptr, r.referral()->subject()->date_of_birth());  // year vs age band
  EXPECT_TRUE(r.Lists(r.report.dropped, "subject.national_id"));
  EXPECT_TRUE(r.Lists(r.report.dropped, "subject.date_of_birth"));
  EXPECT_EQ("Amani", r.referral()->subject()->given_name()->str());
}

TEST_F(PolicyCombineTest, NestedRevealsKeepTheNarrowerOne) {
  const std::string json = Referral(
      R"({"national_id": "12345678", "phone": "+254700000001", "date_of_birth": "2009-05-14",
          "address": {"street": "1 Lane", "sub_county": "Likoni", "county": "Mombasa"}})");
  Received r = Send(Rule("release", "subject.national_id: mask(last:4), subject.phone: pseudonymize, "
                                    "subject.address: generalize(sub_county), others: allow"),
                    Rule("accept", "subject.national_id: mask(last:2), "
                                   "subject.address: generalize(county), others: allow"),
                    json);
  ASSERT_NE(nullptr, r.referral());
  EXPECT_EQ("******78", r.referral()->subject()->national_id()->str());
  EXPECT_EQ(32u, r.referral()->subject()->phone()->size());
  EXPECT_EQ("2009-05-14", r.referral()->subject()->date_of_birth()->str());
  EXPECT_EQ(nullptr, r.referral()->subject()->address()->sub_county());
  EXPECT_EQ("Mombasa", r.referral()->subject()->address()->county()->str());
}

// docs/policies.md §7: a mask or a pseudonym fits text, not a date; a date
// action fits dates. Refused with file:line:column and the actions that fit.
TEST_F(PolicyCombineTest, AnActionThatDoesNotFitTheFieldTypeIsRefusedAtLoad) {
  struct Case {
    std::string fields, expected;
  };
  for (const Case& c : std::vector<Case>{
           {"subject.date_of_birth: mask(last:5)",
            "mask(last:5) does not fit 'subject.date_of_birth', which is a date of birth; use allow, "
            "drop, generalize(year), generalize(age-band)"},
           {"risk.assessed_at: mask(last:2)",
            "mask(last:2) does not fit 'risk.assessed_at', which is a date; use allow, drop, "
            "generalize(year)"},
           {"justice.release_date: pseudonymize", "pseudonymize does not fit 'justice.release_date'"},
           {"subject.gender: mask(last:1)",
            "does not fit 'subject.gender', which is a code, yes/no or number; use allow, drop"},
           {"requested_services: pseudonymize", "which is a list of codes"},
           {"subject.given_name: generalize(year)",
            "which is a text field; use allow, drop, pseudonymize, mask(last:N)"},
       }) {
    auto set = Load(Rule("release", c.fields), Rule("accept", "others: allow"));
    ASSERT_FALSE(set.ok()) << c.fields;
    const std::string message = set.status().message();
    EXPECT_NE(std::string::npos, message.find("exit-a.yaml:9:")) << message;
    EXPECT_NE(std::string::npos, message.find(c.expected)) << message;
  }
}

// A group line expands to its leaves; where its action does not fit a leaf,
// that leaf is dropped (fail closed), never passed on or masked.
TEST_F(PolicyCombineTest, AGroupActionThatDoesNotFitALeafDropsThatLeaf) {
  Received r = Send(Rule("release", "subject: pseudonymize, others: allow"),
                    Rule("accept", "others: allow"),
                    Referral(R"({"given_name": "Amani", "date_of_birth": "2009-05-14", "gender": "male"})"));
  ASSERT_NE(nullptr, r.referral());
  EXPECT_EQ(32u, r.referral()->subject()->given_name()->size());
  EXPECT_EQ(nullptr, r.referral()->subject()->date_of_birth());
  EXPECT_TRUE(r.Lists(r.report.dropped, "subject.date_of_birth"));
}

// ---- 2. A mask never shows the whole value, nor more than half ----------

TEST_F(PolicyCombineTest, AMaskNeverRevealsTheWholeValueNorMoreThanHalf) {
  struct Case {
    std::string name;
    int n;
    std::string shown;
  };
  for (const Case& c : std::vector<Case>{{"Amani", 5, "***ni"},
                                         {"Amani", 64, "***ni"},
                                         {"Ali", 3, "**i"},
                                         {"Al", 2, "*l"},
                                         {"A", 1, "*"},
                                         {"Zoë", 3, "**ë"},
                                         {"Åsa Öberg", 4, "*****berg"},
                                         {"Ωmega", 2, "***ga"}}) {
    Received r = Send(Rule("release", "subject.given_name: mask(last:" + std::to_string(c.n) + ")"),
                      Rule("accept", "others: allow"),
                      Referral(R"({"given_name": ")" + c.name + R"("})"));
    ASSERT_NE(nullptr, r.referral());
    ASSERT_NE(nullptr, r.referral()->subject());
    EXPECT_EQ(c.shown, r.referral()->subject()->given_name()->str()) << c.name << " last:" << c.n;
    EXPECT_TRUE(r.Lists(r.report.transformed, "subject.given_name"));
  }
}

// ---- 4. Blank values and break-glass text -------------------------------

TEST_F(PolicyCombineTest, ABlankValueIsDroppedNeverTokenised) {
  for (const std::string blank : {"", "   ", "\\t\\n", "\u00a0\u3000", "\u200b"}) {
    Received r = Send(Rule("release", "subject: pseudonymize"), Rule("accept", "others: allow"),
                      Referral(R"({"given_name": ")" + blank + R"(", "family_name": "Example",
                                   "aliases": [")" + blank + R"(", " "]})"));
    ASSERT_NE(nullptr, r.referral());
    ASSERT_NE(nullptr, r.referral()->subject());
    EXPECT_EQ(nullptr, r.referral()->subject()->given_name()) << "'" << blank << "'";
    EXPECT_EQ(nullptr, r.referral()->subject()->aliases()) << "'" << blank << "'";
    EXPECT_EQ(32u, r.referral()->subject()->family_name()->size());
    EXPECT_TRUE(r.Lists(r.report.dropped, "subject.given_name"));
    EXPECT_TRUE(r.Lists(r.report.dropped, "subject.aliases"));
    EXPECT_FALSE(r.Lists(r.report.transformed, "subject.given_name"));
    EXPECT_FALSE(r.Lists(r.report.transformed, "subject.aliases"));
  }
  // In a list, only the blank items go.
  Received r = Send(Rule("release", "subject: pseudonymize"), Rule("accept", "others: allow"),
                    Referral(R"({"aliases": ["Ami", "  ", "Mwana"]})"));
  ASSERT_NE(nullptr, r.referral()->subject()->aliases());
  ASSERT_EQ(2u, r.referral()->subject()->aliases()->size());
  EXPECT_TRUE(r.Lists(r.report.transformed, "subject.aliases"));
}

TEST_F(PolicyCombineTest, BreakGlassNeedsTenCharactersOfRealText) {
  auto set = Load("release:\n  - id: bg\n    messages: [CaseReferral]\n    break_glass: true\n"
                  "    fields: {others: allow}\n",
                  Rule("accept", "others: allow"));
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  const auto& exit = (*set)->For(*(*set)->directory().Find("exit-a"));
  const auto& youth = (*set)->For(*(*set)->directory().Find("youth-b"));
  struct Case {
    std::string text;
    bool invokes;
  };
  for (const Case& c : std::vector<Case>{{"          ", false},
                                         {"\\t \\n \\r", false},
                                         {"\u00a0\u2003\u3000\u200b\ufeff", false},
                                         {"urgent", false},
                                         {"t h r e a t   t o", false},  // 8 letters
                                         {"threat to life", true},      // 12 letters
                                         {"0123456789", true}}) {
    std::string json = Referral(R"({"given_name": "Amani"})");
    json.insert(1, R"("break_glass": ")" + c.text + R"(", )");
    auto bytes = codec.ToBinary(json, "test");
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    const MessageFacts facts = ExtractFacts(*wire::VerifyEnvelope(*bytes), (*set)->vocabulary());
    EXPECT_EQ(c.invokes, facts.break_glass) << "'" << c.text << "'";
    EXPECT_EQ(c.invokes, Decide(exit, youth, facts).allowed()) << "'" << c.text << "'";
  }
}

// ---- 7. The date on which a subject's age is counted --------------------

struct AgeCase {
  const char* created_at;
  const char* date_of_birth;
  bool minor;
  const char* age_band;
};

class MessageDateTest : public PolicyCombineTest, public ::testing::WithParamInterface<AgeCase> {};

// The age is the subject's age on the UTC date of created_at.
TEST_P(MessageDateTest, AgeIsCountedOnTheUtcDateOfCreatedAt) {
  const AgeCase& c = GetParam();
  const std::string json =
      Referral(std::string(R"({"date_of_birth": ")") + c.date_of_birth + "\"}", c.created_at);
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto bytes = codec.ToBinary(json, "test");
  ASSERT_TRUE(bytes.ok());
  auto set = Load(Rule("release", "subject.date_of_birth: generalize(age-band)"),
                  Rule("accept", "others: allow"));
  ASSERT_TRUE(set.ok());
  const MessageFacts facts = ExtractFacts(*wire::VerifyEnvelope(*bytes), (*set)->vocabulary());
  ASSERT_TRUE(facts.subject_minor.has_value());
  EXPECT_EQ(c.minor, *facts.subject_minor) << c.created_at << " born " << c.date_of_birth;
  Received r = Send(Rule("release", "subject.date_of_birth: generalize(age-band)"),
                    Rule("accept", "others: allow"), json);
  ASSERT_NE(nullptr, r.referral());
  ASSERT_NE(nullptr, r.referral()->subject());
  ASSERT_NE(nullptr, r.referral()->subject()->date_of_birth());
  EXPECT_EQ(c.age_band, r.referral()->subject()->date_of_birth()->str()) << c.created_at;
}

// 18th birthday on 1 March 2026 (born 2008-03-01); 15th for 2011-03-01.
INSTANTIATE_TEST_SUITE_P(
    Offsets, MessageDateTest,
    ::testing::Values(
        // +03:00 (Nairobi): 01:00 local on 1 March is still 28 February in UTC.
        AgeCase{"2026-03-01T01:00:00+03:00", "2008-03-01", true, "15-19"},
        AgeCase{"2026-03-01T02:59:59+03:00", "2008-03-01", true, "15-19"},
        AgeCase{"2026-03-01T03:00:00+03:00", "2008-03-01", false, "15-19"},
        AgeCase{"2026-03-01T01:00:00+03:00", "2011-03-01", true, "10-14"},
        AgeCase{"2026-03-01T03:00:00+03:00", "2011-03-01", true, "15-19"},
        // -05:00: the evening of 28 February local is already 1 March in UTC.
        AgeCase{"2026-02-28T18:59:59-05:00", "2008-03-01", true, "15-19"},
        AgeCase{"2026-02-28T19:00:00-05:00", "2008-03-01", false, "15-19"},
        AgeCase{"2026-02-28T19:00:00-05:00", "2011-03-01", true, "15-19"},
        // Z: midnight UTC itself.
        AgeCase{"2026-02-28T23:59:59.999Z", "2008-03-01", true, "15-19"},
        AgeCase{"2026-03-01T00:00:00Z", "2008-03-01", false, "15-19"},
        // +14:00 (Kiribati): the afternoon of 1 March local is 28 February UTC.
        AgeCase{"2026-03-01T13:59:59+14:00", "2008-03-01", true, "15-19"},
        AgeCase{"2026-03-01T14:00:00+14:00", "2008-03-01", false, "15-19"},
        AgeCase{"2026-03-01T13:59:59+14:00", "2011-03-01", true, "10-14"},
        // Born on 29 February: 18 on 1 March of a year without one.
        AgeCase{"2026-02-28T23:59:59Z", "2008-02-29", true, "15-19"},
        AgeCase{"2026-03-01T00:00:00Z", "2008-02-29", false, "15-19"}),
    [](const auto& info) {
      // "2026-02-28T19:00:00-05:00", born 2008-03-01: "at_20260228T190000minus0500_born_20080301".
      const std::string at = info.param.created_at;
      std::string out = "at_";
      for (size_t i = 0; i < at.size(); ++i) {
        if (std::isalnum(static_cast<unsigned char>(at[i]))) out += at[i];
        if (at[i] == '+') out += "plus";
        if (at[i] == '-' && i > 10) out += "minus";
      }
      out += "_born_";
      for (const char* c = info.param.date_of_birth; *c; ++c) {
        if (*c != '-') out += *c;
      }
      return out;
    });

}  // namespace
}  // namespace liaison::policy
