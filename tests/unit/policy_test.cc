// The policy engine: loading and validation errors, rule matching, field
// resolution, the combination of both sides, and every action.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "explain/explain.h"
#include "policy/engine.h"
#include "testing/fixtures.h"

namespace liaison::policy {
namespace {

using testing::MakeAgency;
using testing::TempDir;
using wire::Code;

constexpr const char* kSecret = "0123456789abcdef0123456789abcdef";

// Two agencies, exit-a (sender) and youth-b (recipient), with the given
// rules, plus youth-c (another recipient) with the same rules as youth-b.
class PolicyTest : public ::testing::Test {
 protected:
  StatusOr<std::shared_ptr<const PolicySet>> Load(const std::string& a_rules,
                                                  const std::string& b_rules) {
    auto a = MakeAgency("exit-a", "exit-programme", "mombasa");
    auto b = MakeAgency("youth-b", "youth-welfare", "mombasa");
    auto c = MakeAgency("youth-c", "youth-welfare", "kwale");
    a.rules = a_rules.empty() ? "release: []\n" : a_rules;
    b.rules = b_rules.empty() ? "accept: []\n" : b_rules;
    c.rules = b.rules;
    testing::WritePolicies(dir_.path().string(), {a, b, c});
    return PolicySet::Load(dir_.path().string(), kSecret);
  }
  std::shared_ptr<const PolicySet> MustLoad(const std::string& a_rules, const std::string& b_rules) {
    auto set = Load(a_rules, b_rules);
    EXPECT_TRUE(set.ok()) << set.status().ToString();
    if (!set.ok()) throw std::runtime_error("policies do not load");
    return *set;
  }
  std::string LoadError(const std::string& a_rules, const std::string& b_rules = "") {
    auto set = Load(a_rules, b_rules);
    EXPECT_FALSE(set.ok());
    return set.ok() ? "" : set.status().message();
  }

  TempDir dir_;
};

// A referral with most fields set, as JSON.
std::string ReferralJson(const std::string& extra_header = "") {
  return R"({"id": "m1", "purpose": "referral-for-services", "legal_basis": "consent",
    "consent": {"status": "given"}, "created_at": "2026-11-24T09:30:00Z", )" +
         extra_header + R"(
    "payload_type": "CaseReferral", "payload": {
      "subject": {"pseudonym": "P-1", "given_name": "Amani", "family_name": "Example",
        "aliases": ["Ami", "Mwana"], "date_of_birth": "2009-05-14", "gender": "male",
        "national_id": "12345678", "phone": "+254700000001",
        "address": {"street": "1 Lane", "ward": "Likoni", "sub_county": "Likoni",
                    "county": "Mombasa", "country": "Kenya"},
        "guardian": {"name": "Zawadi", "phone": "+254700000002"}},
      "reason": "wants help", "risk": {"instrument": "vera_2r", "level": "moderate", "summary": "s"},
      "requested_services": ["mentoring", "education"],
      "health": {"conditions": ["c1"], "fit_for_programme": false},
      "counselling_notes": "private", "attachments": [{"name": "a.pdf", "size_bytes": 10},
                                                      {"name": "b.pdf", "sha256": "ff"}]}})";
}

std::vector<uint8_t> Binary(const std::string& json) {
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto b = codec.ToBinary(json, "test");
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? *b : std::vector<uint8_t>{};
}

std::string Rule(const std::string& side, const std::string& id, const std::string& body,
                 const std::string& fields = "others: allow") {
  return side + ":\n  - id: " + id + "\n" + body + "    fields: {" + fields + "}\n";
}
const std::string kReferral = "    messages: [CaseReferral]\n";

// Explains the referral from exit-a to youth-b.
Explanation ExplainTo(const PolicySet& set, const std::string& json, const std::string& to = "youth-b") {
  auto bytes = Binary(json);
  auto e = Explain(set, *set.directory().Find("exit-a"), *set.directory().Find(to), bytes);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(*e);
}

std::string ActionOf(const Explanation& e, const std::string& path) {
  for (const auto& f : e.fields) {
    if (*f.path == path) return ActionText(f.action);
  }
  return "(absent)";
}

const wire::CaseReferral* Received(const Explanation& e) {
  const wire::Envelope* env = wire::VerifyEnvelope(e.received);
  return env ? env->payload_as_CaseReferral() : nullptr;
}

TEST(ActionTest, ParsesEveryFormAndRejectsTheRest) {
  EXPECT_EQ(ActionKind::kAllow, ParseAction("allow")->kind);
  EXPECT_EQ(ActionKind::kDrop, ParseAction("drop")->kind);
  EXPECT_EQ(ActionKind::kPseudonymize, ParseAction("pseudonymize")->kind);
  EXPECT_EQ(ActionKind::kGeneralizeYear, ParseAction("generalize(year)")->kind);
  EXPECT_EQ(ActionKind::kGeneralizeAgeBand, ParseAction("generalize(age-band)")->kind);
  EXPECT_EQ(ActionKind::kGeneralizeCounty, ParseAction("generalize(county)")->kind);
  EXPECT_EQ(ActionKind::kGeneralizeSubCounty, ParseAction("generalize(sub_county)")->kind);
  EXPECT_EQ(4, ParseAction("mask(last:4)")->mask_last);
  for (const char* bad : {"Allow", "mask(last:0)", "mask(last:)", "mask(last:x)", "mask(4)",
                          "generalize(decade)", "pseudonymise", ""}) {
    EXPECT_FALSE(ParseAction(bad).has_value()) << bad;
  }
  for (const char* text : {"allow", "drop", "mask(last:3)", "generalize(county)"}) {
    EXPECT_EQ(text, ActionText(*ParseAction(text)));
  }
}

// The combination table of docs/policies.md §7, one row per test: the
// action on one side, and what it gives with each action on the other side
// (N = 4, M = 2). Columns: allow, drop, pseudonymize, mask(last:M),
// generalize(year), generalize(age-band), generalize(sub_county),
// generalize(county).
const std::vector<std::string> kTableColumns = {
    "allow", "drop", "pseudonymize", "mask(last:2)", "generalize(year)", "generalize(age-band)",
    "generalize(sub_county)", "generalize(county)"};

struct CombinationRow {
  const char* name;
  std::string action;
  std::vector<std::string> with;  // the result with each of kTableColumns
};

class CombinationTableTest : public ::testing::TestWithParam<CombinationRow> {};

TEST_P(CombinationTableTest, RevealsOnlyWhatBothReveal) {
  const CombinationRow& row = GetParam();
  ASSERT_EQ(kTableColumns.size(), row.with.size());
  const Action a = *ParseAction(row.action);
  for (size_t i = 0; i < kTableColumns.size(); ++i) {
    const Action b = *ParseAction(kTableColumns[i]);
    EXPECT_EQ(row.with[i], ActionText(CombineActions(a, b))) << row.action << " with " << kTableColumns[i];
    EXPECT_EQ(row.with[i], ActionText(CombineActions(b, a))) << kTableColumns[i] << " with " << row.action;
  }
}

const std::string kDrop = "drop";
INSTANTIATE_TEST_SUITE_P(
    Rows, CombinationTableTest,
    ::testing::Values(
        CombinationRow{"allow", "allow",
                       {"allow", kDrop, "pseudonymize", "mask(last:2)", "generalize(year)",
                        "generalize(age-band)", "generalize(sub_county)", "generalize(county)"}},
        CombinationRow{"drop", "drop", {kDrop, kDrop, kDrop, kDrop, kDrop, kDrop, kDrop, kDrop}},
        CombinationRow{"pseudonymize", "pseudonymize",
                       {"pseudonymize", kDrop, "pseudonymize", kDrop, kDrop, kDrop, kDrop, kDrop}},
        CombinationRow{"mask", "mask(last:4)",
                       {"mask(last:4)", kDrop, kDrop, "mask(last:2)", kDrop, kDrop, kDrop, kDrop}},
        CombinationRow{"year", "generalize(year)",
                       {"generalize(year)", kDrop, kDrop, kDrop, "generalize(year)", kDrop, kDrop, kDrop}},
        CombinationRow{"age_band", "generalize(age-band)",
                       {"generalize(age-band)", kDrop, kDrop, kDrop, kDrop, "generalize(age-band)",
                        kDrop, kDrop}},
        CombinationRow{"sub_county", "generalize(sub_county)",
                       {"generalize(sub_county)", kDrop, kDrop, kDrop, kDrop, kDrop,
                        "generalize(sub_county)", "generalize(county)"}},
        CombinationRow{"county", "generalize(county)",
                       {"generalize(county)", kDrop, kDrop, kDrop, kDrop, kDrop, "generalize(county)",
                        "generalize(county)"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ActionTest, TwoMasksGiveTheOneShowingFewerCharacters) {
  for (int n = 1; n <= 64; ++n) {
    for (int m : {1, 2, 5, 63, 64}) {
      const Action a = *ParseAction("mask(last:" + std::to_string(n) + ")");
      const Action b = *ParseAction("mask(last:" + std::to_string(m) + ")");
      EXPECT_EQ("mask(last:" + std::to_string(std::min(n, m)) + ")", ActionText(CombineActions(a, b)));
    }
  }
}

// The table printed in docs/policies.md §7 is the engine's, cell by cell.
TEST(ActionTest, TheDocumentedTableIsTheEngines) {
  const std::string doc = testing::ReadText(std::string(LIAISON_SOURCE_DIR) + "/docs/policies.md");
  auto action = [](std::string cell) {
    cell.erase(std::remove(cell.begin(), cell.end(), '`'), cell.end());
    cell.erase(0, cell.find_first_not_of(' '));
    cell.erase(cell.find_last_not_of(' ') + 1);
    if (cell == "mask(last:N)") return std::string("mask(last:4)");
    if (cell == "mask(last:M)" || cell == "mask(last:min(N,M))") return std::string("mask(last:2)");
    return cell;
  };
  std::istringstream lines(doc.substr(doc.find("| one side \\ other side |")));
  std::string line;
  std::getline(lines, line);
  std::vector<std::string> columns;
  for (size_t pos = line.find('|', 1); pos + 1 < line.size(); pos = line.find('|', pos + 1)) {
    columns.push_back(action(line.substr(pos + 1, line.find('|', pos + 1) - pos - 1)));
  }
  ASSERT_EQ(kTableColumns, columns);
  std::getline(lines, line);  // |---|
  int rows = 0;
  while (std::getline(lines, line) && line.rfind("| `", 0) == 0) {
    std::vector<std::string> cells;
    for (size_t pos = 0; pos + 1 < line.size(); pos = line.find('|', pos + 1)) {
      cells.push_back(action(line.substr(pos + 1, line.find('|', pos + 1) - pos - 1)));
    }
    ASSERT_EQ(columns.size() + 1, cells.size()) << line;
    const auto row = ParseAction(cells[0]);
    ASSERT_TRUE(row.has_value()) << cells[0];
    for (size_t i = 0; i < columns.size(); ++i) {
      EXPECT_EQ(cells[i + 1], ActionText(CombineActions(*row, *ParseAction(columns[i]))))
          << cells[0] << " with " << columns[i];
    }
    ++rows;
  }
  EXPECT_EQ(8, rows);
}

TEST(SchemaLayoutTest, EveryPayloadFitsTheLeafBudget) {
  for (size_t tag = 1; tag < kPayloadTypes; ++tag) {
    const PayloadLayout* layout = SchemaLayout::Get().For(static_cast<wire::Payload>(tag));
    ASSERT_NE(nullptr, layout);
    EXPECT_LE(layout->leaves.size(), kMaxLeaves) << layout->name;
    EXPECT_FALSE(layout->leaves.empty());
  }
  const PayloadLayout* referral = SchemaLayout::Get().For(wire::Payload::CaseReferral);
  std::vector<std::string> paths;
  for (const auto& l : referral->leaves) paths.push_back(l.path);
  for (const char* p : {"subject.date_of_birth", "subject.address.county", "subject.guardian.name",
                        "health.fit_for_programme", "attachments.sha256", "requested_services"}) {
    EXPECT_NE(paths.end(), std::find(paths.begin(), paths.end(), p)) << p;
  }
}

TEST_F(PolicyTest, DenyByDefaultAndBothSidesMustAgree) {
  auto none = MustLoad("", "");
  auto e = ExplainTo(*none, ReferralJson());
  EXPECT_FALSE(e.decision.allowed());
  EXPECT_STREQ("no-release-rule", e.decision.reason);

  auto release_only = MustLoad(Rule("release", "r1", kReferral), "");
  e = ExplainTo(*release_only, ReferralJson());
  EXPECT_STREQ("no-accept-rule", e.decision.reason);
  EXPECT_EQ("r1", e.decision.release->id);

  auto both = MustLoad(Rule("release", "r1", kReferral), Rule("accept", "a1", kReferral));
  e = ExplainTo(*both, ReferralJson());
  ASSERT_TRUE(e.decision.allowed());
  EXPECT_EQ("a1", e.decision.accept->id);
}

TEST_F(PolicyTest, ConditionsMustAllHold) {
  struct Case {
    std::string condition;
    bool matches;
  };
  const std::vector<Case> cases = {
      {"    to: {kinds: [youth-welfare]}\n", true},
      {"    to: {kinds: [security-agency]}\n", false},
      {"    to: {regions: [kwale]}\n", false},
      {"    to: {agencies: [youth-b]}\n", true},
      {"    to: {agencies: [youth-c]}\n", false},
      {"    to: {kinds: [youth-welfare], regions: [mombasa]}\n", true},
      {"    purposes: [referral-for-services]\n", true},
      {"    purposes: [imminent-threat]\n", false},
      {"    legal_bases: [consent]\n", true},
      {"    legal_bases: [vital-interests]\n", false},
      {"    consent: [given]\n", true},
      {"    consent: [refused, not_required]\n", false},
      {"    handling: [unspecified]\n", true},
      {"    handling: [H2]\n", false},
      {"    subject_minor: true\n", true},   // born 2009-05-14, message 2026-11-24: 17
      {"    subject_minor: false\n", false},
      {"    risk_levels: [moderate, high]\n", true},
      {"    risk_levels: [imminent]\n", false},
      {"    break_glass: true\n", false},    // no justification given
      {"    break_glass: false\n", true},
  };
  for (const auto& c : cases) {
    auto set = MustLoad(Rule("release", "r", kReferral + c.condition), Rule("accept", "a", kReferral));
    auto e = ExplainTo(*set, ReferralJson());
    EXPECT_EQ(c.matches, e.decision.allowed()) << c.condition;
  }
  // Another message type never matches a CaseReferral-only rule.
  auto set = MustLoad(Rule("release", "r", "    messages: [CaseUpdate]\n"),
                      Rule("accept", "a", kReferral));
  EXPECT_FALSE(ExplainTo(*set, ReferralJson()).decision.allowed());
}

TEST_F(PolicyTest, MinorIsUnknownWithoutADateOfBirth) {
  auto set = MustLoad(Rule("release", "r", kReferral + "    subject_minor: false\n"),
                      Rule("accept", "a", kReferral));
  std::string json = ReferralJson();
  const std::string dob = "\"date_of_birth\": \"2009-05-14\",";
  json.replace(json.find(dob), dob.size(), "");
  EXPECT_FALSE(ExplainTo(*set, json).decision.allowed());
  // An adult matches subject_minor: false.
  std::string adult = ReferralJson();
  adult.replace(adult.find("2009-05-14"), 10, "1990-01-01");
  EXPECT_TRUE(ExplainTo(*set, adult).decision.allowed());
}

TEST_F(PolicyTest, BreakGlassRulesNeedAJustificationAndAreFlagged) {
  auto set = MustLoad(Rule("release", "bg", kReferral + "    break_glass: true\n"),
                      Rule("accept", "a", kReferral));
  EXPECT_FALSE(ExplainTo(*set, ReferralJson()).decision.allowed());
  EXPECT_FALSE(ExplainTo(*set, ReferralJson(R"("break_glass": "",)")).decision.allowed());
  auto e = ExplainTo(*set, ReferralJson(R"("break_glass": "threat to life",)"));
  ASSERT_TRUE(e.decision.allowed());
  EXPECT_TRUE(e.decision.break_glass());
}

TEST_F(PolicyTest, FirstMatchingRuleWinsOnEachSide) {
  auto set = MustLoad("release:\n"
                      "  - id: narrow\n    messages: [CaseReferral]\n    purposes: [imminent-threat]\n"
                      "    fields: {others: allow}\n"
                      "  - id: second\n    messages: [CaseReferral]\n    fields: {reason: allow}\n"
                      "  - id: third\n    messages: [CaseReferral]\n    fields: {others: allow}\n",
                      Rule("accept", "a", kReferral));
  auto e = ExplainTo(*set, ReferralJson());
  ASSERT_TRUE(e.decision.allowed());
  EXPECT_EQ("second", e.decision.release->id);
  EXPECT_EQ("allow", ActionOf(e, "reason"));
  EXPECT_EQ("drop", ActionOf(e, "subject.given_name"));
}

TEST_F(PolicyTest, MostSpecificFieldEntryWins) {
  auto set = MustLoad(
      Rule("release", "r", kReferral,
           "\"*\": allow, subject: pseudonymize, subject.guardian.*: drop, "
           "subject.guardian.name: mask(last:2), subject.address: generalize(county), "
           "subject.address.street: allow, health.*: drop, others: drop"),
      Rule("accept", "a", kReferral));
  auto e = ExplainTo(*set, ReferralJson());
  EXPECT_EQ("pseudonymize", ActionOf(e, "subject.given_name"));   // table path
  EXPECT_EQ("drop", ActionOf(e, "subject.gender"));               // pseudonymize cannot apply
  EXPECT_EQ("drop", ActionOf(e, "subject.guardian.phone"));       // prefix.* beats subject
  EXPECT_EQ("mask(last:2)", ActionOf(e, "subject.guardian.name"));  // exact beats prefix
  EXPECT_EQ("allow", ActionOf(e, "subject.address.street"));      // exact beats generalize
  EXPECT_EQ("drop", ActionOf(e, "subject.address.ward"));
  EXPECT_EQ("allow", ActionOf(e, "subject.address.county"));
  EXPECT_EQ("drop", ActionOf(e, "health.fit_for_programme"));
  EXPECT_EQ("allow", ActionOf(e, "reason"));                      // "*" beats others
  EXPECT_EQ("allow", ActionOf(e, "attachments.name"));
}

TEST_F(PolicyTest, UnnamedFieldsAreDroppedUnlessOthersSaysSo) {
  auto set = MustLoad(Rule("release", "r", kReferral, "reason: allow"), Rule("accept", "a", kReferral));
  auto e = ExplainTo(*set, ReferralJson());
  EXPECT_EQ("allow", ActionOf(e, "reason"));
  EXPECT_EQ("drop", ActionOf(e, "subject.given_name"));
  const auto* r = Received(e);
  ASSERT_NE(nullptr, r);
  EXPECT_EQ(nullptr, r->subject());  // an empty table is left out
  EXPECT_EQ("wants help", r->reason()->str());
}

TEST_F(PolicyTest, TheStricterSideDecidesEachField) {
  auto set = MustLoad(Rule("release", "r", kReferral,
                           "subject.national_id: mask(last:4), subject.phone: allow, "
                           "subject.given_name: pseudonymize, counselling_notes: allow, others: allow"),
                      Rule("accept", "a", kReferral,
                           "subject.national_id: mask(last:2), subject.phone: drop, "
                           "subject.given_name: allow, others: allow"));
  auto e = ExplainTo(*set, ReferralJson());
  EXPECT_EQ("mask(last:2)", ActionOf(e, "subject.national_id"));
  EXPECT_EQ("drop", ActionOf(e, "subject.phone"));
  EXPECT_EQ("pseudonymize", ActionOf(e, "subject.given_name"));
  EXPECT_EQ("allow", ActionOf(e, "counselling_notes"));
  for (const auto& f : e.fields) {
    if (*f.path == "subject.phone") {
      EXPECT_EQ("subject.phone: drop", f.accept.entry);
      EXPECT_EQ("subject.phone: allow", f.release.entry);
    }
  }
}

TEST_F(PolicyTest, ActionsRewriteTheValues) {
  auto set = MustLoad(
      Rule("release", "r", kReferral,
           "subject.national_id: pseudonymize, subject.phone: mask(last:3), "
           "subject.date_of_birth: generalize(age-band), risk.assessed_at: generalize(year), "
           "subject.address: generalize(sub_county), subject.aliases: pseudonymize, others: allow"),
      Rule("accept", "a", kReferral));
  auto e = ExplainTo(*set, ReferralJson());
  const auto* r = Received(e);
  ASSERT_NE(nullptr, r);
  EXPECT_EQ(32u, r->subject()->national_id()->size());
  EXPECT_NE("12345678", r->subject()->national_id()->str());
  EXPECT_EQ("**********001", r->subject()->phone()->str());
  EXPECT_EQ("15-19", r->subject()->date_of_birth()->str());
  EXPECT_EQ(nullptr, r->subject()->address()->street());
  EXPECT_EQ(nullptr, r->subject()->address()->ward());
  EXPECT_EQ("Likoni", r->subject()->address()->sub_county()->str());
  EXPECT_EQ("Mombasa", r->subject()->address()->county()->str());
  ASSERT_EQ(2u, r->subject()->aliases()->size());
  EXPECT_NE(r->subject()->aliases()->Get(0)->str(), r->subject()->aliases()->Get(1)->str());
  // Untouched fields, including an optional scalar that is false, survive.
  ASSERT_TRUE(r->health()->fit_for_programme().has_value());
  EXPECT_FALSE(*r->health()->fit_for_programme());
  EXPECT_EQ(2u, r->requested_services()->size());
  EXPECT_EQ(wire::RiskLevel::moderate, r->risk()->level());
  ASSERT_EQ(2u, r->attachments()->size());
  EXPECT_EQ(10u, r->attachments()->Get(0)->size_bytes());
  EXPECT_EQ("ff", r->attachments()->Get(1)->sha256()->str());
}

TEST_F(PolicyTest, PseudonymsAreStablePerRecipientAndDifferAcrossRecipientsAndFields) {
  auto set = MustLoad(Rule("release", "r", kReferral,
                           "subject.national_id: pseudonymize, subject.pseudonym: pseudonymize"),
                      Rule("accept", "a", kReferral));
  std::string json = ReferralJson();
  json.replace(json.find("\"P-1\""), 5, "\"12345678\"");  // the same value in two fields
  auto b1 = ExplainTo(*set, json, "youth-b");
  auto b2 = ExplainTo(*set, json, "youth-b");
  auto c = ExplainTo(*set, json, "youth-c");
  const std::string at_b = Received(b1)->subject()->national_id()->str();
  EXPECT_EQ(at_b, Received(b2)->subject()->national_id()->str());
  EXPECT_NE(at_b, Received(c)->subject()->national_id()->str());
  EXPECT_NE(at_b, Received(b1)->subject()->pseudonym()->str());
  EXPECT_EQ(at_b, Pseudonym(set->For(*set->directory().Find("youth-b")).pseudonym_key,
                            "subject.national_id", "12345678"));
}

TEST_F(PolicyTest, MaskCountsCharactersNotBytes) {
  auto set = MustLoad(Rule("release", "r", kReferral, "subject.given_name: mask(last:2)"),
                      Rule("accept", "a", kReferral));
  std::string json = ReferralJson();
  json.replace(json.find("\"Amani\""), 7, "\"Zoë Åsa\"");
  EXPECT_EQ("*****sa", Received(ExplainTo(*set, json))->subject()->given_name()->str());
  json = ReferralJson();
  json.replace(json.find("\"Amani\""), 7, "\"Aé\"");
  EXPECT_EQ("*é", Received(ExplainTo(*set, json))->subject()->given_name()->str());  // half at most
}

TEST_F(PolicyTest, UnparseableDatesAreDroppedNotPassedOn) {
  auto set = MustLoad(Rule("release", "r", kReferral,
                           "subject.date_of_birth: generalize(year), reason: allow"),
                      Rule("accept", "a", kReferral));
  std::string json = ReferralJson();
  json.replace(json.find("2009-05-14"), 10, "14/05/2009");
  auto bytes = Binary(json);
  const wire::Envelope* env = wire::VerifyEnvelope(bytes);
  const auto* exit = set->directory().Find("exit-a");
  const auto* youth = set->directory().Find("youth-b");
  MessageFacts facts = ExtractFacts(*env, set->vocabulary());
  Decision d = Decide(set->For(*exit), set->For(*youth), facts);
  std::array<Action, kMaxLeaves> actions;
  CombinePlans(d, facts.type, actions.data());
  flatbuffers::FlatBufferBuilder fbb;
  FieldReport report;
  ASSERT_TRUE(Rewrite(*env, "exit-a", "youth-b", actions.data(), set->For(*youth).pseudonym_key,
                      facts, fbb, &report).ok());
  const auto* out = wire::VerifyEnvelope({fbb.GetBufferPointer(), fbb.GetSize()});
  ASSERT_NE(nullptr, out);
  EXPECT_EQ(nullptr, out->payload_as_CaseReferral()->subject());
  auto has = [](const std::vector<const std::string*>& list, const std::string& name) {
    return std::any_of(list.begin(), list.end(), [&](const std::string* s) { return *s == name; });
  };
  EXPECT_TRUE(has(report.dropped, "subject.date_of_birth"));
  EXPECT_TRUE(has(report.released, "reason"));
  EXPECT_TRUE(has(report.dropped, "counselling_notes"));
  EXPECT_FALSE(has(report.dropped, "subject.email"));  // not in the message: not reported
  EXPECT_EQ("exit-a", out->from()->str());
  EXPECT_EQ("youth-b", out->to()->Get(0)->agency()->str());
}

struct BadRuleCase {
  const char* name;
  std::string release;
  std::vector<std::string> expected;
};

class BadRuleTest : public PolicyTest, public ::testing::WithParamInterface<BadRuleCase> {};

TEST_P(BadRuleTest, IsReportedWithFileLineAndHint) {
  const std::string message = LoadError(GetParam().release);
  for (const auto& part : GetParam().expected) {
    EXPECT_NE(std::string::npos, message.find(part)) << "missing '" << part << "' in:\n" << message;
  }
}

// The agency file has 5 identity lines; rules start on line 6.
INSTANTIATE_TEST_SUITE_P(
    Cases, BadRuleTest,
    ::testing::Values(
        BadRuleCase{"unknown_path", Rule("release", "r", kReferral, "subject.date_of_brth: allow"),
                    {"exit-a.yaml:9:", "no field 'subject.date_of_brth' in CaseReferral",
                     "did you mean 'subject.date_of_birth'?"}},
        BadRuleCase{"unknown_action", Rule("release", "r", kReferral, "reason: alow"),
                    {"exit-a.yaml:9:", "unknown action 'alow'", "did you mean 'allow'?"}},
        BadRuleCase{"unknown_purpose", Rule("release", "r", kReferral + "    purposes: [referal-for-services]\n"),
                    {"exit-a.yaml:9:16", "unknown purpose 'referal-for-services'",
                     "did you mean 'referral-for-services'?"}},
        BadRuleCase{"unknown_kind", Rule("release", "r", kReferral + "    to: {kinds: [youth-welfar]}\n"),
                    {"unknown agency kind 'youth-welfar'", "did you mean 'youth-welfare'?"}},
        BadRuleCase{"unknown_agency", Rule("release", "r", kReferral + "    to: {agencies: [youth-x]}\n"),
                    {"unknown agency 'youth-x'"}},
        BadRuleCase{"unknown_message_type", Rule("release", "r", "    messages: [CaseReferal]\n"),
                    {"unknown message type 'CaseReferal'", "did you mean 'CaseReferral'?"}},
        BadRuleCase{"duplicate_rule_id",
                    Rule("release", "r", kReferral) + "  - id: r\n" + kReferral + "    fields: {}\n",
                    {"rule id 'r' is used twice"}},
        BadRuleCase{"wrong_counterpart_key", Rule("release", "r", kReferral + "    from: {kinds: [youth-welfare]}\n"),
                    {"a release rule names its recipients under 'to'"}},
        BadRuleCase{"address_action_on_a_field", Rule("release", "r", kReferral, "reason: generalize(county)"),
                    {"generalize(county) applies to an address"}},
        BadRuleCase{"pseudonymize_an_enum", Rule("release", "r", kReferral, "subject.gender: pseudonymize"),
                    {"exit-a.yaml:9:", "pseudonymize does not fit 'subject.gender', which is a code",
                     "use allow, drop"}},
        BadRuleCase{"age_band_not_a_birth_date", Rule("release", "r", kReferral, "risk.assessed_at: generalize(age-band)"),
                    {"exit-a.yaml:9:",
                     "generalize(age-band) does not fit 'risk.assessed_at', which is a date; use "
                     "allow, drop, generalize(year)"}},
        BadRuleCase{"others_transforms", Rule("release", "r", kReferral, "others: pseudonymize"),
                    {"others can only be allow or drop"}},
        BadRuleCase{"empty_list", Rule("release", "r", kReferral + "    purposes: []\n"),
                    {"an empty list matches nothing"}},
        BadRuleCase{"missing_fields", "release:\n  - id: r\n    messages: [CaseReferral]\n",
                    {"exit-a.yaml:7:5", "missing 'fields'"}},
        BadRuleCase{"missing_messages", "release:\n  - id: r\n    fields: {others: allow}\n",
                    {"missing 'messages'"}},
        BadRuleCase{"prefix_of_a_leaf", Rule("release", "r", kReferral, "reason.*: allow"),
                    {"'reason' is a single field"}},
        BadRuleCase{"unknown_rule_key", Rule("release", "r", kReferral + "    purpose: [x]\n"),
                    {"unknown key 'release[0].purpose'", "did you mean 'release[0].purposes'?"}},
        BadRuleCase{"unknown_consent", Rule("release", "r", kReferral + "    consent: [yes]\n"),
                    {"unknown consent status 'yes'"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(PolicyTest, EveryErrorIsReportedAtOnce) {
  const std::string message =
      LoadError(Rule("release", "r", kReferral + "    purposes: [nope]\n", "reason: alow, x.y: allow"),
                Rule("accept", "a", "    messages: [Nope]\n"));
  EXPECT_NE(std::string::npos, message.find("unknown purpose 'nope'"));
  EXPECT_NE(std::string::npos, message.find("unknown action 'alow'"));
  EXPECT_NE(std::string::npos, message.find("no field 'x.y'"));
  EXPECT_NE(std::string::npos, message.find("youth-b.yaml"));
  EXPECT_NE(std::string::npos, message.find("unknown message type 'Nope'"));
}

TEST_F(PolicyTest, VersionFollowsTheFiles) {
  auto one = MustLoad(Rule("release", "r", kReferral), Rule("accept", "a", kReferral));
  auto same = PolicySet::Load(dir_.path().string(), kSecret);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(one->version(), (*same)->version());
  EXPECT_EQ(16u, one->version().size());
  testing::WriteText(dir_.file("agencies/youth-c.yaml"),
                     testing::ReadText(dir_.file("agencies/youth-c.yaml")) + "# a comment\n");
  auto changed = PolicySet::Load(dir_.path().string(), kSecret);
  ASSERT_TRUE(changed.ok());
  EXPECT_NE(one->version(), (*changed)->version());
}

TEST(ExamplePoliciesTest, ShippedPoliciesLoad) {
  std::vector<std::string> warnings;
  auto set = PolicySet::Load(std::string(LIAISON_SOURCE_DIR) + "/policies", kSecret, &warnings);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
}

TEST(ResponseDeadlinesTest, DefaultsOverridesAndErrorsWithTheirLine) {
  TempDir dir;
  auto a = MakeAgency("a", "exit-programme", "mombasa");
  testing::WritePolicies(dir.path().string(), {a});
  const std::string vocabulary = testing::ReadText(dir.file("vocabulary.yaml"));
  auto set = PolicySet::Load(dir.path().string(), "secret");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(kDefaultResponseDeadlines, (*set)->vocabulary().response_deadlines);
  EXPECT_EQ(4 * kHourMs, (*set)->vocabulary().response_deadlines[static_cast<size_t>(wire::Urgency::red)]);

  testing::WriteText(dir.file("vocabulary.yaml"), vocabulary + "response_deadlines:\n  red: 90m\n  green: 5d\n");
  set = PolicySet::Load(dir.path().string(), "secret");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  const ResponseDeadlines& d = (*set)->vocabulary().response_deadlines;
  EXPECT_EQ(90 * 60 * 1000, d[static_cast<size_t>(wire::Urgency::red)]);
  EXPECT_EQ(24 * kHourMs, d[static_cast<size_t>(wire::Urgency::amber)]);  // left out: the default
  EXPECT_EQ(5 * 24 * kHourMs, d[static_cast<size_t>(wire::Urgency::green)]);
  EXPECT_EQ(0, d[static_cast<size_t>(wire::Urgency::unspecified)]);

  const int line = static_cast<int>(std::count(vocabulary.begin(), vocabulary.end(), '\n')) + 2;
  testing::WriteText(dir.file("vocabulary.yaml"),
                     vocabulary + "response_deadlines:\n  red: 4 hours\n  purple: 1h\n  amber: 0h\n");
  set = PolicySet::Load(dir.path().string(), "secret");
  ASSERT_FALSE(set.ok());
  const std::string text = set.status().message();
  EXPECT_NE(std::string::npos, text.find("vocabulary.yaml:" + std::to_string(line) + ":")) << text;
  EXPECT_NE(std::string::npos, text.find("'response_deadlines.red': not a duration")) << text;
  EXPECT_NE(std::string::npos, text.find("'response_deadlines.amber': not a duration")) << text;
  EXPECT_NE(std::string::npos, text.find("purple")) << text;
}

TEST(ResponseDeadlinesTest, ParseDeadline) {
  EXPECT_EQ(30000, ParseDeadline("30s"));
  EXPECT_EQ(2 * kHourMs, ParseDeadline("2h"));
  EXPECT_EQ(365 * 24 * kHourMs, ParseDeadline("365d"));
  for (const char* bad : {"", "h", "0h", "-1h", "1.5h", "4 h", "4H", "366d", "99999999999999999999s"}) {
    EXPECT_EQ(std::nullopt, ParseDeadline(bad)) << bad;
  }
}

}  // namespace
}  // namespace liaison::policy
