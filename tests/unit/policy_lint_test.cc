// policy check's warnings: broad allows on release rules, and rules that can
// never match because an earlier rule of the same side always matches first.
#include "policy/policy_lint.h"

#include <gtest/gtest.h>

#include <random>

#include "policy/engine.h"
#include "testing/fixtures.h"

namespace liaison::policy {
namespace {

using testing::MakeAgency;
using testing::TempDir;

class PolicyLintTest : public ::testing::Test {
 protected:
  // exit-a has `rules`; youth-b accepts everything. Returns exit-a's warnings.
  std::vector<std::string> Lint(const std::string& rules) {
    auto a = MakeAgency("exit-a", "exit-programme", "mombasa");
    auto b = MakeAgency("youth-b", "youth-welfare", "mombasa");
    a.rules = rules;
    testing::WritePolicies(dir_.path().string(), {a, b});
    auto set = PolicySet::Load(dir_.path().string(), "secret");
    EXPECT_TRUE(set.ok()) << set.status().ToString();
    if (!set.ok()) return {"does not load"};
    return LintPolicy(*(*set)->Find("exit-a"));
  }
  std::string File() const { return dir_.file("agencies/exit-a.yaml"); }
  // "file:line" of line `n` of the rules (the fixture writes 5 identity lines first).
  std::string At(int n) const { return File() + ":" + std::to_string(n + 5); }

  TempDir dir_;
};

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

TEST_F(PolicyLintTest, BroadAllowsOnReleaseRulesWarnWithTheirLines) {
  const auto w = Lint(
      "release:\n"                                   // 1
      "  - id: everything\n"                         // 2
      "    messages: [CaseReferral]\n"               // 3
      "    purposes: [referral-for-services]\n"      // 4
      "    fields:\n"                                // 5
      "      '*': allow\n"                           // 6
      "  - id: whole-subject\n"                      // 7
      "    messages: [CaseReferral]\n"               // 8
      "    purposes: [case-coordination]\n"          // 9
      "    fields:\n"                                // 10
      "      subject: allow\n"                       // 11
      "      risk.level: allow\n"                    // 12
      "      others: allow\n"                        // 13
      "  - id: subject-group\n"                      // 14
      "    messages: [CaseReferral]\n"               // 15
      "    purposes: [imminent-threat]\n"            // 16
      "    fields:\n"                                // 17
      "      subject.*: allow\n"                     // 18
      "accept:\n"                                    // 19
      "  - id: take-all\n"                           // 20
      "    messages: [CaseReferral]\n"               // 21
      "    fields: {'*': allow, others: allow}\n");
  ASSERT_EQ(4u, w.size()) << Joined(w);
  EXPECT_EQ(0u, w[0].rfind(At(6) + ": release rule 'everything': '*: allow' releases every "
                                   "field of the message", 0)) << w[0];
  EXPECT_EQ(0u, w[1].rfind(At(11) + ": release rule 'whole-subject': 'subject: allow'", 0)) << w[1];
  EXPECT_EQ(0u, w[2].rfind(At(13) + ": release rule 'whole-subject': 'others: allow'", 0)) << w[2];
  EXPECT_EQ(0u, w[3].rfind(At(18) + ": release rule 'subject-group': 'subject.*: allow'", 0)) << w[3];
}

TEST_F(PolicyLintTest, NamedFieldsAndBroadDropsDoNotWarn) {
  EXPECT_TRUE(Lint("release:\n  - id: narrow\n    messages: [CaseReferral]\n"
                   "    fields: {subject.given_name: allow, subject.phone: pseudonymize,\n"
                   "             '*': drop, others: drop}\n")
                  .empty());
}

TEST_F(PolicyLintTest, ARuleAfterABroaderOneOfTheSameSideWarns) {
  const auto w = Lint(
      "release:\n"                                        // 1
      "  - id: any-referral\n"                            // 2
      "    messages: [CaseReferral, CaseUpdate]\n"        // 3
      "    fields: {others: drop}\n"                      // 4
      "  - id: referral-for-minors\n"                     // 5
      "    to: {kinds: [youth-welfare]}\n"                // 6
      "    messages: [CaseReferral]\n"                    // 7
      "    purposes: [referral-for-services]\n"           // 8
      "    subject_minor: true\n"                         // 9
      "    risk_levels: [high]\n"                         // 10
      "    break_glass: true\n"                           // 11
      "    fields: {reason: allow}\n"                     // 12
      "accept:\n"                                         // 13
      "  - id: from-youth\n"                              // 14
      "    from: {kinds: [youth-welfare, exit-programme]}\n"  // 15
      "    messages: [CaseUpdate]\n"                      // 16
      "    consent: [given, refused]\n"                   // 17
      "    fields: {others: drop}\n"                      // 18
      "  - id: from-youth-given\n"                        // 19
      "    from: {kinds: [youth-welfare], regions: [mombasa]}\n"  // 20
      "    messages: [CaseUpdate]\n"                      // 21
      "    consent: [given]\n"                            // 22
      "    fields: {others: drop}\n");
  ASSERT_EQ(2u, w.size()) << Joined(w);
  EXPECT_EQ(At(5) + ": release rule 'referral-for-minors' can never match: rule 'any-referral' (" +
                At(2) + ") comes first and matches every message it would; rules are tried top "
                         "to bottom, so put the narrower rule first or remove it",
            w[0]);
  EXPECT_EQ(0u, w[1].rfind(At(19) + ": accept rule 'from-youth-given' can never match: rule "
                                    "'from-youth'", 0)) << w[1];
}

TEST_F(PolicyLintTest, ALaterRuleThatCanMatchSomethingElseDoesNotWarn) {
  auto pair = [&](const std::string& earlier, const std::string& later) {
    return Lint("release:\n  - id: first\n" + earlier + "    fields: {others: drop}\n"
                "  - id: second\n" + later + "    fields: {others: drop}\n");
  };
  const std::string ref = "    messages: [CaseReferral]\n";
  // Each later rule matches a message the earlier one does not.
  EXPECT_TRUE(pair(ref, "    messages: [CaseReferral, CaseUpdate]\n").empty());
  EXPECT_TRUE(pair(ref + "    purposes: [referral-for-services]\n", ref).empty());
  EXPECT_TRUE(pair(ref + "    break_glass: true\n", ref).empty());
  EXPECT_TRUE(pair(ref + "    subject_minor: true\n", ref).empty());
  EXPECT_TRUE(pair(ref + "    subject_minor: true\n", ref + "    subject_minor: false\n").empty());
  EXPECT_TRUE(pair(ref + "    risk_levels: [high]\n", ref + "    risk_levels: [high, imminent]\n").empty());
  EXPECT_TRUE(pair(ref + "    to: {regions: [kwale]}\n", ref + "    to: {regions: [mombasa]}\n").empty());
  // A full list of consent values is not "any": a value newer than this
  // broker matches only the rule without the condition.
  EXPECT_TRUE(pair(ref + "    consent: [unknown, given, refused, not_required]\n", ref).empty());
  // Conservative: the earlier rule names youth-b's kind, the later youth-b
  // itself; that is a shadow today, but depends on the directory.
  EXPECT_TRUE(pair(ref + "    to: {kinds: [youth-welfare]}\n", ref + "    to: {agencies: [youth-b]}\n")
                  .empty());
  // Release and accept rules never shadow each other.
  EXPECT_TRUE(Lint("release:\n  - id: r\n" + ref + "    fields: {others: drop}\n"
                   "accept:\n  - id: a\n" + ref + "    fields: {others: drop}\n")
                  .empty());
}

TEST(PolicyLintShippedTest, ShippedPoliciesHaveNoWarnings) {
  auto set = PolicySet::Load(std::string(LIAISON_SOURCE_DIR) + "/policies", "secret");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  for (const auto& agency : (*set)->directory().agencies()) {
    EXPECT_EQ("", Joined(LintPolicy((*set)->For(agency))));
  }
}

// No false positives: whenever lint calls a rule shadowed, the engine's own
// first-match never picks it, for random rules and random messages.
TEST(PolicyLintPropertyTest, AShadowedRuleIsNeverTheEnginesFirstMatch) {
  std::mt19937 rng(20261124);
  auto coin = [&](int n) { return static_cast<int>(rng() % n); };
  auto pick = [&](std::vector<std::string> from) {
    std::vector<std::string> out;
    if (coin(2)) return out;
    for (auto& s : from) {
      if (coin(2)) out.push_back(s);
    }
    if (out.empty()) out.push_back(from[coin(static_cast<int>(from.size()))]);
    return out;
  };
  auto mask = [&](int values) { return coin(2) ? ~0u : 1u + rng() % ((1u << values) - 1); };
  auto random_rule = [&]() {
    Rule r;
    r.messages = (1u + rng() % 3) << 1;  // CaseReferral and/or ReferralResponse
    r.agencies = pick({"a", "b"});
    r.kinds = pick({"k1", "k2"});
    r.regions = pick({"r1", "r2"});
    for (const auto& p : pick({"0", "1"})) r.purposes.push_back(static_cast<uint16_t>(std::stoi(p)));
    for (const auto& p : pick({"0", "1"})) r.legal_bases.push_back(static_cast<uint16_t>(std::stoi(p)));
    r.consent = mask(4);
    r.handling = mask(5);
    r.risk = mask(5);
    if (coin(3) == 0) r.subject_minor = coin(2) == 0;
    r.break_glass = coin(3) == 0;
    return r;
  };
  size_t shadowed = 0, checked = 0;
  for (int pair = 0; pair < 20000; ++pair) {
    const std::vector<Rule> rules = {random_rule(), random_rule()};
    if (!AlwaysMatchesFirst(rules[0], rules[1])) continue;
    ++shadowed;
    for (int m = 0; m < 200; ++m) {
      broker::Agency counterpart;
      counterpart.id = std::vector<std::string>{"a", "b", "c"}[coin(3)];
      counterpart.kind = std::vector<std::string>{"k1", "k2", "k3"}[coin(3)];
      counterpart.region = std::vector<std::string>{"r1", "r2", "r3"}[coin(3)];
      MessageFacts f;
      f.type = static_cast<wire::Payload>(1 + coin(3));
      f.purpose = coin(4) - 1;
      f.legal_basis = coin(4) - 1;
      f.consent = static_cast<wire::ConsentStatus>(coin(6));  // past the known values too
      f.handling = static_cast<wire::Handling>(coin(7));
      f.risk = static_cast<wire::RiskLevel>(coin(7));
      if (coin(3)) f.subject_minor = coin(2) == 0;
      f.break_glass = coin(2) == 0;
      ASSERT_NE(&rules[1], FirstMatch(rules, counterpart, f)) << "pair " << pair;
      ++checked;
    }
  }
  EXPECT_GT(shadowed, 20u);  // the test saw real shadows, not only unrelated pairs
  EXPECT_GT(checked, 4000u);
}

}  // namespace
}  // namespace liaison::policy
