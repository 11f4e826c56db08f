// M&E reports over a generated ledger with known counts.
#include "audit/report.h"

#include <gtest/gtest.h>

#include "audit/ledger.h"
#include "testing/fixtures.h"

namespace liaison::audit {
namespace {

TEST(ReportTest, CountsFlowsRatesDenialsAndSuppressesSmallCells) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSigningKey(dir.path().string(), "k").ok());
  const std::string path = dir.file("ledger.log");
  {
    auto ledger = Ledger::Open(path, *LoadSigningKey(dir.file("k.key")), DeriveCaseKey("s"), 1000);
    ASSERT_TRUE(ledger.ok());
    auto add = [&](ledger::Decision d, const std::string& id, const std::string& type,
                   const std::string& from_kind, const std::string& to_kind, const std::string& extra) {
      Entry e;
      e.decision = d;
      e.message_id = id;
      e.type = type;
      e.sender = from_kind + "-1";
      e.recipient = to_kind + "-1";
      e.sender_kind = from_kind;
      e.recipient_kind = to_kind;
      e.sender_region = "mombasa";
      e.recipient_region = "kwale";
      e.urgency = "red";
      if (d == ledger::Decision::denied) e.reason = extra;
      if (type == "ReferralResponse") e.response = extra;
      (*ledger)->Add(e);
    };
    for (int i = 0; i < 7; ++i) {
      add(ledger::Decision::released, "r" + std::to_string(i), "CaseReferral", "exit-programme", "youth-welfare", "");
      add(ledger::Decision::delivered, "r" + std::to_string(i), "", "exit-programme", "youth-welfare", "");
    }
    for (int i = 0; i < 3; ++i) {
      add(ledger::Decision::released, "p" + std::to_string(i), "CaseReferral", "prison-service", "exit-programme", "");
    }
    for (int i = 0; i < 6; ++i) add(ledger::Decision::denied, "d" + std::to_string(i), "CaseReferral", "exit-programme", "security-agency", "no-release-rule");
    for (int i = 0; i < 5; ++i) add(ledger::Decision::released, "a" + std::to_string(i), "ReferralResponse", "youth-welfare", "exit-programme", "accepted");
    for (int i = 0; i < 5; ++i) add(ledger::Decision::released, "n" + std::to_string(i), "ReferralResponse", "youth-welfare", "exit-programme", "declined");
    add(ledger::Decision::break_glass, "b", "CaseReferral", "exit-programme", "security-agency", "");
    ASSERT_TRUE((*ledger)->Flush(true).ok());
  }
  auto r = BuildReport(path, "2000-01-01", "2100-01-01");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(7u, (r->flows_by_kind[{"exit-programme", "youth-welfare"}]));
  EXPECT_EQ(3u, (r->flows_by_kind[{"prison-service", "exit-programme"}]));
  EXPECT_EQ(10u, (r->flows_by_region[{"mombasa", "kwale"}]));
  EXPECT_EQ(6u, r->denials_by_reason["no-release-rule"]);
  EXPECT_EQ(5u, r->accepted["youth-welfare"]);
  EXPECT_EQ(5u, r->declined["youth-welfare"]);
  EXPECT_EQ(7u, r->by_urgency["red"].delivered);
  EXPECT_EQ(7u, r->by_urgency["red"].within);
  EXPECT_EQ(1u, r->break_glass_by_sender["exit-programme-1"]);
  const std::string md = ToMarkdown(*r);
  EXPECT_NE(std::string::npos, md.find("| exit-programme | youth-welfare | 7 |"));
  EXPECT_NE(std::string::npos, md.find("| prison-service | exit-programme | <5 |"));  // 3 is suppressed
  EXPECT_NE(std::string::npos, md.find("| youth-welfare | 5 | 5 | 50% |"));
  EXPECT_NE(std::string::npos, md.find("| red | 7 | 7 | 100% |"));
  EXPECT_NE(std::string::npos, md.find("| exit-programme-1 | <5 |"));
  EXPECT_EQ(std::string::npos, md.find("| 3 |"));
  EXPECT_NE(std::string::npos, ToCsv(*r).find("flow_kind,prison-service,exit-programme,<5"));
  EXPECT_NE(std::string::npos, FlowsSvg(*r).find("<svg"));
  // Outside the period: nothing.
  auto empty = BuildReport(path, "2000-01-01", "2000-02-01");
  EXPECT_EQ(0u, empty->released);
}

TEST(ReportTest, Periods) {
  auto month = Period("month", "2026-10-01");
  ASSERT_TRUE(month.ok());
  EXPECT_EQ("2026-10-01", month->first);
  EXPECT_EQ("2026-11-01", month->second);
  EXPECT_EQ("2027-01-01", Period("quarter", "2026-10-01")->second);
  EXPECT_EQ("2026-10-08", Period("week", "2026-10-01")->second);
  EXPECT_FALSE(Period("fortnight", "2026-10-01").ok());
  EXPECT_FALSE(Period("week", "01/10/2026").ok());
  EXPECT_TRUE(Period("week", "").ok());
}

}  // namespace
}  // namespace liaison::audit
