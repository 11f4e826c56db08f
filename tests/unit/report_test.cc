// M&E reports over a generated ledger with known counts.
#include "audit/report.h"

#include <gtest/gtest.h>

#include <png.h>

#include <cstdlib>
#include <functional>
#include <set>

#include "audit/ledger.h"
#include "liaison/wire.h"
#include "testing/fixtures.h"

namespace liaison::audit {
namespace {

TEST(ReportTest, TimesResponsesAgainstTheirDeadlinesAndSuppressesWhatWouldSingleOutAFewCases) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSigningKey(dir.path().string(), "k").ok());
  const std::string path = dir.file("ledger.log");
  {
    auto ledger = Ledger::Open(path, *LoadSigningKey(dir.file("k.key")), DeriveCaseKey("s"), 1000);
    ASSERT_TRUE(ledger.ok());
    auto add = [&](ledger::Decision d, const std::string& type, const std::string& id, bool from_exit,
                   const std::string& in_reply_to = "") {
      Entry e;
      e.decision = d;
      e.type = type;
      e.message_id = id;
      e.sender = from_exit ? "exit-1" : "youth-1";
      e.recipient = from_exit ? "youth-1" : "exit-1";
      e.sender_kind = from_exit ? "exit-programme" : "youth-welfare";
      e.recipient_kind = from_exit ? "youth-welfare" : "exit-programme";
      e.urgency = type == "CaseReferral" ? "amber" : "unspecified";
      if (!in_reply_to.empty()) e.in_reply_to = ReferralLink("exit-1", in_reply_to);
      (*ledger)->Add(e);
    };
    // 15 referrals: 7 answered in time, 3 answered after their clock
    // fired, 5 never answered (their clocks fired).
    for (int i = 0; i < 15; ++i) add(ledger::Decision::released, "CaseReferral", "r" + std::to_string(i), true);
    for (int i = 7; i < 15; ++i) add(ledger::Decision::overdue, "CaseReferral", "r" + std::to_string(i), true);
    for (int i = 0; i < 10; ++i) {
      add(ledger::Decision::released, "ReferralResponse", "resp" + std::to_string(i), false, "r" + std::to_string(i));
    }
    // A second response to an answered referral, and one to no referral of
    // this sender: neither counts.
    add(ledger::Decision::released, "ReferralResponse", "again", false, "r0");
    add(ledger::Decision::released, "ReferralResponse", "stray", false, "unknown");
    ASSERT_TRUE((*ledger)->Flush(true).ok());
  }
  auto r = BuildReport(path, "2000-01-01", "2100-01-01");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Report::Responses& d = r->responses[{"amber", "youth-welfare"}];
  EXPECT_EQ(10u, d.answered);
  EXPECT_EQ(7u, d.within);
  EXPECT_EQ(8u, d.overdue);
  EXPECT_EQ(10u, d.response_ms.size());
  const std::string md = ToMarkdown(*r);
  // 3 answered late is below 5: answered (10) and within (7) are not both
  // printed, so that 10 - 7 cannot be worked out.
  EXPECT_EQ(std::string::npos, md.find("| amber | youth-welfare | 10 | 7 |")) << md;
  EXPECT_NE(std::string::npos, md.find("| amber | youth-welfare | ")) << md;
  EXPECT_NE(std::string::npos, md.find("| 8 |")) << md;
  EXPECT_NE(std::string::npos, ToCsv(*r).find("response,amber/youth-welfare,overdue,8"));
}

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
  // 3 is suppressed; the 7 beside it is withheld too, because the regions
  // table counts the same 10 referrals (10 - 7 = 3).
  EXPECT_NE(std::string::npos, md.find("| exit-programme | youth-welfare | x |"));
  EXPECT_NE(std::string::npos, md.find("| prison-service | exit-programme | <5 |"));
  EXPECT_NE(std::string::npos, md.find("| mombasa | kwale | 10 |"));
  EXPECT_NE(std::string::npos, md.find("| youth-welfare | 5 | 5 | 50% |"));
  // All 7 within the deadline: 7 - 7 = 0 past it, a count below 5.
  EXPECT_NE(std::string::npos, md.find("| red | 7 | x | - |"));
  EXPECT_NE(std::string::npos, md.find("| exit-programme-1 | <5 |"));
  EXPECT_EQ(std::string::npos, md.find("| 3 |"));
  EXPECT_NE(std::string::npos, ToCsv(*r).find("flow_kind,prison-service,exit-programme,<5"));
  EXPECT_NE(std::string::npos, ToCsv(*r).find("flow_kind,exit-programme,youth-welfare,x"));
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
  // Real dates only, in full (the date library reads them).
  EXPECT_FALSE(Period("month", "2026-02-30").ok());
  EXPECT_FALSE(Period("month", "2026-10-01x").ok());
  EXPECT_FALSE(Period("month", "2026-13-01").ok());
  EXPECT_EQ("2024-03-29", Period("month", "2024-02-29")->second);
  // A day past the next month's end counts on, as it always did.
  EXPECT_EQ("2026-03-03", Period("month", "2026-01-31")->second);
  EXPECT_EQ("2027-01-05", Period("week", "2026-12-29")->second);
  // Without --from: the last complete period, starting on a Monday / a 1st.
  auto week = Period("week", "");
  ASSERT_TRUE(week.ok());
  const auto monday = wire::ParseRfc3339Millis(week->first + "T00:00:00Z");
  ASSERT_TRUE(monday.has_value());
  EXPECT_EQ(4, *monday / 86400000 % 7) << week->first << " is a Monday (1970-01-05 was one)";
  EXPECT_EQ(*monday + 7 * 86400000LL, wire::ParseRfc3339Millis(week->second + "T00:00:00Z"));
  for (const char* period : {"month", "quarter"}) {
    auto p = Period(period, "");
    ASSERT_TRUE(p.ok());
    EXPECT_EQ("01", p->first.substr(8)) << period;
    EXPECT_EQ("01", p->second.substr(8)) << period;
    EXPECT_LT(p->first, p->second);
  }
  EXPECT_EQ(1, std::stoi(Period("quarter", "")->first.substr(5, 2)) % 3);
}


// Every value each withheld cell can take, given the printed cells, the sums
// and what a reader knows of withheld cells ("<5": 0..4, "x": 5 or more,
// hidden: 0 or more), by brute force up to `cap`: independent of Suppress.
std::vector<std::set<uint64_t>> Possible(const CountTable& t, const std::vector<bool>& withheld,
                                         uint64_t cap) {
  std::vector<size_t> unknown;
  for (size_t i = 0; i < t.values.size(); ++i) {
    if (withheld[i]) unknown.push_back(i);
  }
  std::vector<int64_t> v(t.values.begin(), t.values.end());
  std::vector<bool> known(t.values.size());
  for (size_t i = 0; i < known.size(); ++i) known[i] = !withheld[i];
  std::vector<std::set<uint64_t>> out(t.values.size());
  auto sums_hold = [&]() {
    for (const auto& sum : t.sums) {
      int64_t total = 0;
      bool complete = true;
      for (const auto& term : sum) {
        complete = complete && known[term.cell];
        total += term.coefficient * v[term.cell];
      }
      if (complete && total != 0) return false;
    }
    return true;
  };
  std::function<void(size_t)> walk = [&](size_t k) {
    if (!sums_hold()) return;
    if (k == unknown.size()) {
      for (size_t c : unknown) out[c].insert(static_cast<uint64_t>(v[c]));
      return;
    }
    const size_t c = unknown[k];
    uint64_t lo = 0, hi = cap;
    if (!t.hidden[c]) {
      if (t.values[c] < kMinCount) hi = kMinCount - 1;
      else lo = kMinCount;
    }
    known[c] = true;
    for (uint64_t x = lo; x <= hi; ++x) {
      v[c] = static_cast<int64_t>(x);
      walk(k + 1);
    }
    known[c] = false;
  };
  walk(0);
  return out;
}

// Cells below 5 whose value a reader can work out exactly.
std::vector<size_t> Recoverable(const CountTable& t, const std::vector<bool>& withheld) {
  uint64_t cap = 0;
  for (uint64_t v : t.values) cap = std::max(cap, v);
  cap += 10;  // a reader knows no upper bound for "x" or hidden cells
  const auto possible = Possible(t, withheld, cap);
  std::vector<size_t> out;
  for (size_t i = 0; i < t.values.size(); ++i) {
    if (t.values[i] < kMinCount && possible[i].size() <= 1) out.push_back(i);
  }
  return out;
}

std::vector<bool> PrimaryOnly(const CountTable& t) {
  std::vector<bool> w(t.values.size());
  for (size_t i = 0; i < w.size(); ++i) w[i] = t.hidden[i] || t.values[i] < kMinCount;
  return w;
}

// A rows x cols table with row, column and grand totals.
CountTable WithMargins(const std::vector<std::vector<uint64_t>>& cells) {
  CountTable t;
  const size_t rows = cells.size(), cols = cells[0].size();
  std::vector<std::vector<size_t>> id(rows, std::vector<size_t>(cols));
  for (size_t i = 0; i < rows; ++i) {
    for (size_t j = 0; j < cols; ++j) id[i][j] = t.Add(cells[i][j]);
  }
  std::vector<CountTable::Term> grand;
  uint64_t all = 0;
  for (size_t i = 0; i < rows; ++i) {
    uint64_t sum = 0;
    for (size_t j = 0; j < cols; ++j) sum += cells[i][j];
    all += sum;
    std::vector<CountTable::Term> row = {{t.Add(sum), -1}};
    for (size_t j = 0; j < cols; ++j) row.push_back({id[i][j], +1});
    t.sums.push_back(row);
  }
  for (size_t j = 0; j < cols; ++j) {
    uint64_t sum = 0;
    for (size_t i = 0; i < rows; ++i) sum += cells[i][j];
    std::vector<CountTable::Term> col = {{t.Add(sum), -1}};
    for (size_t i = 0; i < rows; ++i) col.push_back({id[i][j], +1});
    t.sums.push_back(col);
    grand.push_back({col[0].cell, +1});
  }
  grand.push_back({t.Add(all), -1});
  t.sums.push_back(grand);
  return t;
}

TEST(SuppressionTest, TwoWayTableWithTotals) {
  const CountTable t = WithMargins({{3, 8, 6}, {7, 9, 5}});
  // Printing only "<5" for the 3 gives it away (row total minus the others).
  EXPECT_EQ(std::vector<size_t>{0}, Recoverable(t, PrimaryOnly(t)));
  const auto withheld = Suppress(t);
  EXPECT_TRUE(Recoverable(t, withheld).empty());
  EXPECT_FALSE(Exposed(t, withheld, 0));
  // Every row and column holds none or at least two withheld cells.
  for (const auto& sum : t.sums) {
    size_t n = 0;
    for (const auto& term : sum) n += withheld[term.cell];
    EXPECT_NE(1u, n);
  }
  // The 6 beside the 3, the 7 below it and the 5 that closes the rectangle.
  size_t count = 0;
  for (bool w : withheld) count += w;
  EXPECT_EQ(4u, count);
}

TEST(SuppressionTest, TwoSmallCellsWhoseSumPinsThem) {
  // 4 + 4 + 9 = 17: with 9 and 17 printed, the two "<5" add up to 8, so both are 4.
  CountTable t;
  const size_t a = t.Add(4), b = t.Add(4), c = t.Add(9), total = t.Add(17);
  t.sums.push_back({{a, 1}, {b, 1}, {c, 1}, {total, -1}});
  EXPECT_EQ((std::vector<size_t>{a, b}), Recoverable(t, PrimaryOnly(t)));
  const auto withheld = Suppress(t);
  EXPECT_TRUE(Recoverable(t, withheld).empty());
  EXPECT_TRUE(withheld[c]);
}

TEST(SuppressionTest, AZeroBesideAWithheldFiveIsStillProtected) {
  // 0 + 5 = 5: withholding the 5 ("x" means 5 or more) would still leave 0.
  CountTable t;
  const size_t zero = t.Add(0), five = t.Add(5), total = t.Add(5);
  t.sums.push_back({{zero, 1}, {five, 1}, {total, -1}});
  const auto withheld = Suppress(t);
  EXPECT_TRUE(Recoverable(t, withheld).empty());
  EXPECT_TRUE(withheld[total]);
}

TEST(SuppressionTest, ReportTablesWhereASmallCellWouldBeRecoverable) {
  Report r;
  r.denied = 12;  // 9 + 3: the 9 printed beside the total would give the 3 away
  r.denials_by_reason = {{"no-release-rule", 9}, {"no-accept-rule", 3}};
  r.by_urgency["amber"] = {12, 9};  // 3 delivered late: 12 - 9
  r.by_urgency["green"] = {20, 10};  // 10 late: nothing to protect
  r.flows_by_kind = {{{"exit-programme", "youth-welfare"}, 6}, {{"prison-service", "exit-programme"}, 2}};
  r.flows_by_region = {{{"mombasa", "mombasa"}, 8}};
  const auto x = SecondarySuppression(r);
  EXPECT_EQ((std::set<std::string>{"denials/no-release-rule", "urgency/amber/within",
                                   "flow_kind/exit-programme/youth-welfare"}),
            x);
  const std::string md = ToMarkdown(r);
  EXPECT_NE(std::string::npos, md.find("| <5 | 12 | <5 | <5 | <5 |")) << md;
  EXPECT_NE(std::string::npos, md.find("| no-release-rule | x |")) << md;
  EXPECT_NE(std::string::npos, md.find("| no-accept-rule | <5 |")) << md;
  EXPECT_NE(std::string::npos, md.find("| amber | 12 | x | - |")) << md;
  EXPECT_NE(std::string::npos, md.find("| green | 20 | 10 | 50% |")) << md;
  EXPECT_NE(std::string::npos, md.find("| exit-programme | youth-welfare | x |")) << md;
  EXPECT_NE(std::string::npos, md.find("| mombasa | mombasa | 8 |")) << md;
  EXPECT_EQ(std::string::npos, md.find("| 9 |")) << md;
  EXPECT_EQ(std::string::npos, md.find("| 6 |")) << md;
  const std::string csv = ToCsv(r);
  EXPECT_NE(std::string::npos, csv.find("denials,no-release-rule,,x\n")) << csv;
  EXPECT_NE(std::string::npos, csv.find("urgency,amber,within_deadline,x\n")) << csv;
}


// The chart, rendered as a browser would: rsvg-convert refuses invalid XML
// (an unescaped "<5"), and the PNG's pixels must show what the report says:
// a bar as long as each printed count (to scale), and for a "<5" or "x" a
// hatched marker with no bar at all.
TEST(ReportSvgTest, RendersAndShowsWhatTheReportShows) {
  Report r;
  r.from = "2026-11-01";
  r.until = "2026-12-01";
  r.flows_by_kind = {{{"a&b <kind>", "youth-welfare"}, 6},
                     {{"exit-programme", "youth-welfare"}, 20},
                     {{"health-service", "exit-programme"}, 10},
                     {{"prison-service", "exit-programme"}, 3}};
  r.flows_by_region = {{{"mombasa", "mombasa"}, 39}};
  testing::TempDir dir;
  testing::WriteText(dir.file("flows.svg"), FlowsSvg(r));
  const std::string command = std::string(LIAISON_RSVG_CONVERT) + " -o '" + dir.file("flows.png") +
                              "' '" + dir.file("flows.svg") + "' 2>'" + dir.file("err.txt") + "'";
  ASSERT_EQ(0, std::system(command.c_str()))
      << "rsvg-convert (Debian librsvg2-bin, scripts/install-deps) could not render the chart: "
      << testing::ReadText(dir.file("err.txt"));

  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  ASSERT_NE(0, png_image_begin_read_from_file(&image, dir.file("flows.png").c_str())) << image.message;
  image.format = PNG_FORMAT_RGB;
  std::vector<uint8_t> pixels(PNG_IMAGE_SIZE(image));
  ASSERT_NE(0, png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr)) << image.message;
  ASSERT_EQ(760u, image.width);
  ASSERT_EQ(70u + 22 * 4, image.height);
  auto pixel = [&](unsigned x, unsigned y) { return &pixels[(y * image.width + x) * 3]; };
  auto is_bar = [](const uint8_t* p) {  // #3b73b9
    return std::abs(p[0] - 0x3b) < 12 && std::abs(p[1] - 0x73) < 12 && std::abs(p[2] - 0xb9) < 12;
  };
  auto is_hatch = [](const uint8_t* p) {  // #888888 on white
    return p[0] == p[1] && p[1] == p[2] && p[0] > 0x60 && p[0] < 0xc0;
  };

  // What the report prints for each row, in the chart's order.
  const std::string md = ToMarkdown(r);
  std::vector<std::string> printed;
  uint64_t max = 0;
  for (const auto& [k, n] : r.flows_by_kind) {
    const std::string prefix = "| " + k.first + " | " + k.second + " | ";
    const size_t at = md.find(prefix);
    ASSERT_NE(std::string::npos, at) << md;
    printed.push_back(md.substr(at + prefix.size(), md.find(" |", at + prefix.size()) - at - prefix.size()));
    if (printed.back() != "<5" && printed.back() != "x") max = std::max<uint64_t>(max, std::stoull(printed.back()));
  }
  EXPECT_EQ((std::vector<std::string>{"x", "20", "10", "<5"}), printed);
  for (size_t row = 0; row < printed.size(); ++row) {
    const unsigned y = 40 + 22 * static_cast<unsigned>(row) + 8;
    unsigned bar = 0, bar_end = 0, hatch = 0;
    for (unsigned x = 0; x < image.width; ++x) {
      if (is_bar(pixel(x, y))) ++bar, bar_end = x + 1;
    }
    for (unsigned x = 331; x < 365; ++x) hatch += is_hatch(pixel(x, y));
    if (printed[row] == "<5" || printed[row] == "x") {
      EXPECT_EQ(0u, bar) << "row " << row << " (" << printed[row] << ") has a bar";
      EXPECT_GT(hatch, 5u) << "row " << row << " (" << printed[row] << ") has no hatched marker";
    } else {
      const unsigned expected = static_cast<unsigned>(370 * std::stoull(printed[row]) / max);
      EXPECT_NEAR(expected, bar, 1) << "row " << row;
      EXPECT_EQ(330u + bar, bar_end) << "row " << row << ": the bar starts at the axis, unbroken";
      EXPECT_EQ(0u, hatch) << "row " << row;
    }
  }
  // The label of the escaped kind is in the file as text, not markup.
  EXPECT_NE(std::string::npos, FlowsSvg(r).find("a&amp;b &lt;kind&gt;"));
}

}  // namespace
}  // namespace liaison::audit
