#include "audit/report.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <date/date.h>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "audit/ledger.h"
#include "liaison/wire.h"

namespace liaison::audit {
namespace {

std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

int64_t DeadlineMs(const std::string& urgency) {
  if (urgency == "red") return 4LL * 3600 * 1000;
  if (urgency == "amber") return 24LL * 3600 * 1000;
  if (urgency == "green") return 72LL * 3600 * 1000;
  return -1;
}

// Rank of the sums restricted to `columns` (the other cells are printed, so
// they are constants). Gaussian elimination: the coefficients are +-1 and the
// tables small, so doubles are exact enough.
size_t Rank(const CountTable& t, const std::vector<size_t>& columns) {
  std::vector<std::vector<double>> m;
  for (const auto& sum : t.sums) {
    std::vector<double> row(columns.size(), 0.0);
    for (const auto& term : sum) {
      auto it = std::find(columns.begin(), columns.end(), term.cell);
      if (it != columns.end()) row[it - columns.begin()] += term.coefficient;
    }
    m.push_back(std::move(row));
  }
  size_t rank = 0;
  for (size_t col = 0; col < columns.size() && rank < m.size(); ++col) {
    size_t pivot = rank;
    for (size_t i = rank; i < m.size(); ++i) {
      if (std::fabs(m[i][col]) > std::fabs(m[pivot][col])) pivot = i;
    }
    if (std::fabs(m[pivot][col]) < 1e-9) continue;
    std::swap(m[pivot], m[rank]);
    for (size_t i = rank + 1; i < m.size(); ++i) {
      const double f = m[i][col] / m[rank][col];
      for (size_t j = col; j < columns.size(); ++j) m[i][j] -= f * m[rank][j];
    }
    ++rank;
  }
  return rank;
}

constexpr double kUnbounded = std::numeric_limits<double>::infinity();

// What a reader knows of a withheld cell: "<5" is 0..4, "x" is kMinCount or
// more (anything smaller would have been "<5"), a hidden cell only >= 0.
std::pair<double, double> Bounds(const CountTable& t, size_t cell) {
  if (t.hidden[cell]) return {0, kUnbounded};
  if (t.values[cell] < kMinCount) return {0, kMinCount - 1};
  return {kMinCount, kUnbounded};
}

// Whether one sum, with the printed cells as constants and the bounds of the
// withheld ones, leaves `cell` a single possible value.
bool PinnedBySum(const CountTable& t, const std::vector<bool>& withheld,
                 const std::vector<CountTable::Term>& sum, size_t cell) {
  double constant = 0, others_min = 0, others_max = 0;
  int own = 0;
  for (const auto& term : sum) {
    if (term.cell == cell) {
      own += term.coefficient;
    } else if (!withheld[term.cell]) {
      constant -= term.coefficient * static_cast<double>(t.values[term.cell]);
    } else {
      auto [lo, hi] = Bounds(t, term.cell);
      others_min += term.coefficient > 0 ? lo : -hi;
      others_max += term.coefficient > 0 ? hi : -lo;
    }
  }
  if (own != 1 && own != -1) return false;
  // own * x = constant - others
  double lo = own > 0 ? constant - others_max : others_min - constant;
  double hi = own > 0 ? constant - others_min : others_max - constant;
  auto [cell_lo, cell_hi] = Bounds(t, cell);
  lo = std::max(lo, cell_lo);
  hi = std::min(hi, cell_hi);
  return std::isfinite(lo) && lo == hi;
}

// Whether `j` is a better cell to withhold than `best`: smaller, and on a tie
// the later one, so that a total (added before its parts) stays printed.
bool SmallerCandidate(const CountTable& t, size_t j, size_t best) {
  return best == SIZE_MAX || t.values[j] < t.values[best] ||
         (t.values[j] == t.values[best] && j > best);
}

// The cell to withhold next to protect `cell`: the smallest printed cell of a
// sum that holds it, else of a sum linked to those through withheld cells
// (the chain that gives it away). SIZE_MAX when nothing printed is linked:
// then nothing can help (a "<5" total of an empty table is 0).
size_t NextToWithhold(const CountTable& t, const std::vector<bool>& withheld, size_t cell) {
  std::vector<bool> linked(t.values.size()), used(t.sums.size());
  linked[cell] = true;
  for (bool grew = true; grew;) {
    grew = false;
    size_t best = SIZE_MAX;
    for (size_t s = 0; s < t.sums.size(); ++s) {
      const auto& sum = t.sums[s];
      if (!std::any_of(sum.begin(), sum.end(),
                       [&](const CountTable::Term& term) { return linked[term.cell]; })) {
        continue;
      }
      for (const auto& term : sum) {
        if (!withheld[term.cell] && SmallerCandidate(t, term.cell, best)) best = term.cell;
      }
      if (!used[s]) {
        used[s] = true;
        grew = true;
        for (const auto& term : sum) linked[term.cell] = linked[term.cell] || withheld[term.cell];
      }
    }
    if (best != SIZE_MAX) return best;
  }
  return SIZE_MAX;
}

// Every printed count of a report as a named cell, with the sums that tie
// them: the denials by reason add up to the denied total; both flow tables
// count the same referrals; deliveries within the deadline and past it add
// up to the deliveries.
struct ReportCells {
  CountTable table;
  std::vector<std::string> names;
  size_t Add(std::string name, uint64_t value, bool hidden = false) {
    names.push_back(std::move(name));
    return table.Add(value, hidden);
  }
};

ReportCells CellsOf(const Report& r) {
  ReportCells c;
  using Term = CountTable::Term;
  c.Add("totals/released", r.released);
  const size_t denied = c.Add("totals/denied", r.denied);
  c.Add("totals/delivered", r.delivered);
  c.Add("totals/expired", r.expired);
  c.Add("totals/erased", r.erased);
  std::vector<Term> flows;
  for (const auto& [k, n] : r.flows_by_kind) {
    flows.push_back({c.Add("flow_kind/" + k.first + "/" + k.second, n), +1});
  }
  for (const auto& [k, n] : r.flows_by_region) {
    flows.push_back({c.Add("flow_region/" + k.first + "/" + k.second, n), -1});
  }
  c.table.sums.push_back(std::move(flows));
  for (const auto& [k, n] : r.accepted) c.Add("accepted/" + k, n);
  for (const auto& [k, n] : r.declined) c.Add("declined/" + k, n);
  for (const auto& [u, d] : r.by_urgency) {
    const size_t delivered = c.Add("urgency/" + u + "/delivered", d.delivered);
    const size_t within = c.Add("urgency/" + u + "/within", d.within);
    const size_t past = c.Add("urgency/" + u + "/past", d.delivered - d.within, /*hidden=*/true);
    c.table.sums.push_back({{delivered, +1}, {within, -1}, {past, -1}});
  }
  std::vector<Term> denials = {{denied, -1}};
  for (const auto& [reason, n] : r.denials_by_reason) denials.push_back({c.Add("denials/" + reason, n), +1});
  c.table.sums.push_back(std::move(denials));
  for (const auto& [agency, n] : r.break_glass_by_sender) c.Add("break_glass/" + agency, n);
  for (const auto& [k, d] : r.responses) {
    const std::string name = "response/" + k.first + "/" + k.second;
    const size_t answered = c.Add(name + "/answered", d.answered);
    const size_t within = c.Add(name + "/within", d.within);
    const size_t late = c.Add(name + "/late", d.answered - d.within, /*hidden=*/true);
    c.table.sums.push_back({{answered, +1}, {within, -1}, {late, -1}});
    c.Add(name + "/overdue", d.overdue);
  }
  return c;
}

// The median time to response as "3.5 h", or "-" unless the count of
// answered referrals it summarises is printed (a small group's median
// would describe a few cases).
std::string MedianHours(const std::set<std::string>& withheld, const std::string& answered_cell,
                        const Report::Responses& d) {
  if (d.response_ms.empty() || d.answered < kMinCount || withheld.count(answered_cell)) return "-";
  std::vector<int64_t> ms = d.response_ms;
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  const double median = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2.0;
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << median / 3600000.0 << " h";
  return out.str();
}

// A count as printed: the number, "<5", or "x" when withheld to protect a "<5".
std::string Shown(const std::set<std::string>& withheld, const std::string& name, uint64_t n) {
  if (n < kMinCount) return "<5";
  return withheld.count(name) ? "x" : std::to_string(n);
}

bool Printed(const std::set<std::string>& withheld, const std::string& name, uint64_t n) {
  return n >= kMinCount && !withheld.count(name);
}

std::string XmlEscape(std::string_view text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += ch;
    }
  }
  return out;
}

}  // namespace

std::string Cell(uint64_t n) { return n < kMinCount ? "<5" : std::to_string(n); }

size_t CountTable::Add(uint64_t value, bool is_hidden) {
  values.push_back(value);
  hidden.push_back(is_hidden);
  return values.size() - 1;
}

bool Exposed(const CountTable& t, const std::vector<bool>& withheld, size_t cell) {
  if (!withheld[cell]) return true;
  std::vector<size_t> unknown;  // withheld cells that appear in a sum
  bool in_a_sum = false;
  for (const auto& sum : t.sums) {
    for (const auto& term : sum) {
      if (term.cell == cell) in_a_sum = true;
      if (withheld[term.cell] &&
          std::find(unknown.begin(), unknown.end(), term.cell) == unknown.end()) {
        unknown.push_back(term.cell);
      }
    }
  }
  if (!in_a_sum) return false;
  // Determined exactly iff its column is not a combination of the others'.
  std::vector<size_t> without = unknown;
  without.erase(std::find(without.begin(), without.end(), cell));
  if (Rank(t, without) < Rank(t, unknown)) return true;
  for (const auto& sum : t.sums) {
    if (PinnedBySum(t, withheld, sum, cell)) return true;
  }
  return false;
}

std::vector<bool> Suppress(const CountTable& t) {
  std::vector<bool> withheld(t.values.size());
  for (size_t i = 0; i < t.values.size(); ++i) withheld[i] = t.hidden[i] || t.values[i] < kMinCount;
  // Each round withholds one more cell, so this ends (at worst with every
  // cell of every sum withheld). First the usual rule (a sum with exactly one
  // withheld cell also loses its smallest printed one), then whatever the
  // exact checks still find.
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& sum : t.sums) {
      size_t alone = SIZE_MAX, count = 0;
      for (const auto& term : sum) {
        if (withheld[term.cell]) alone = term.cell, ++count;
      }
      // A hidden count of 5 or more may well be worked out: it is not small.
      if (count != 1 || (t.hidden[alone] && t.values[alone] >= kMinCount)) continue;
      size_t next = SIZE_MAX;
      for (const auto& term : sum) {
        if (!withheld[term.cell] && SmallerCandidate(t, term.cell, next)) next = term.cell;
      }
      if (next == SIZE_MAX) continue;
      withheld[next] = true;
      changed = true;
      break;
    }
    for (size_t c = 0; c < t.values.size() && !changed; ++c) {
      if (t.values[c] >= kMinCount || !Exposed(t, withheld, c)) continue;
      const size_t next = NextToWithhold(t, withheld, c);
      if (next == SIZE_MAX) continue;
      withheld[next] = true;
      changed = true;
    }
  }
  return withheld;
}

std::set<std::string> SecondarySuppression(const Report& r) {
  const ReportCells c = CellsOf(r);
  const std::vector<bool> withheld = Suppress(c.table);
  std::set<std::string> out;
  for (size_t i = 0; i < withheld.size(); ++i) {
    if (withheld[i] && !c.table.hidden[i] && c.table.values[i] >= kMinCount) out.insert(c.names[i]);
  }
  return out;
}

StatusOr<std::pair<std::string, std::string>> Period(const std::string& period, const std::string& from) {
  using namespace date;
  if (period != "week" && period != "month" && period != "quarter") {
    return Status::InvalidArgument("--period must be week, month or quarter");
  }
  sys_days start;
  if (from.empty()) {
    // The last complete period before today.
    const sys_days today = floor<days>(std::chrono::system_clock::now());
    const year_month_day ymd(today);
    if (period == "week") {
      start = today - (weekday(today) - Monday) - weeks(1);  // Monday of last week
    } else if (period == "month") {
      start = sys_days((ymd.year() / ymd.month() - months(1)) / 1);
    } else {
      const month first_of_quarter(static_cast<unsigned>(ymd.month()) - (static_cast<unsigned>(ymd.month()) - 1) % 3);
      start = sys_days((ymd.year() / first_of_quarter - months(3)) / 1);
    }
  } else {
    std::istringstream in(from);
    in >> parse("%Y-%m-%d", start);
    if (in.fail() || in.peek() != std::char_traits<char>::eof()) {
      return Status::InvalidArgument("--from must be a date such as 2026-10-01");
    }
  }
  sys_days end = start + days(7);
  if (period != "week") {
    // A day past the month's end counts on into the next (as 31 January + 1 month is 3 March).
    const year_month_day s(start);
    const year_month_day e = s + months(period == "month" ? 1 : 3);
    end = sys_days(e.year() / e.month() / 1) + (s.day() - day(1));
  }
  return std::make_pair(format("%F", start), format("%F", end));
}

StatusOr<Report> BuildReport(const std::string& ledger_path, const std::string& from,
                             const std::string& until) {
  auto records = ReadLedger(ledger_path);
  if (!records.ok()) return records.status();
  Report r;
  r.from = from;
  r.until = until;
  // Release time and urgency per (message, recipient), to time the delivery.
  std::unordered_map<std::string, std::pair<int64_t, std::string>> released_at;
  // Referrals released before the period's end, by (sender, id, recipient),
  // to time their responses: a referral of last month may be answered in
  // this one.
  struct Referral {
    int64_t released_ms = 0;
    std::string urgency;
    bool fired = false, answered = false;
  };
  std::unordered_map<std::string, Referral> referrals;
  // By ReferralLink(sender, id) and recipient, as responses name them.
  auto referral_key = [](std::string_view sender, std::string_view id, std::string_view recipient) {
    return ReferralLink(sender, id) + '\0' + std::string(recipient);
  };
  for (const auto& bytes : *records) {
    const auto* rec = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
    const std::string time = Str(rec->time());
    if (time >= until) continue;
    const bool in_period = time >= from;
    if (rec->decision() == ledger::Decision::released && Str(rec->type()) == "CaseReferral") {
      if (auto ms = wire::ParseRfc3339Millis(time)) {
        referrals[referral_key(Str(rec->sender()), Str(rec->message_id()), Str(rec->recipient()))] = {
            *ms, Str(rec->urgency())};
      }
    } else if (rec->decision() == ledger::Decision::overdue) {
      auto it = referrals.find(referral_key(Str(rec->sender()), Str(rec->message_id()), Str(rec->recipient())));
      if (it != referrals.end()) it->second.fired = true;
      if (in_period) ++r.responses[{Str(rec->urgency()), Str(rec->recipient_kind())}].overdue;
    } else if (rec->decision() == ledger::Decision::released && Str(rec->type()) == "ReferralResponse") {
      // The response goes from the referral's recipient to its sender.
      auto it = referrals.find(Str(rec->in_reply_to()) + '\0' + Str(rec->sender()));
      auto ms = wire::ParseRfc3339Millis(time);
      if (it != referrals.end() && !it->second.answered && ms) {
        it->second.answered = true;
        if (in_period) {
          auto& d = r.responses[{it->second.urgency, Str(rec->sender_kind())}];
          ++d.answered;
          if (!it->second.fired) ++d.within;
          d.response_ms.push_back(std::max<int64_t>(0, *ms - it->second.released_ms));
        }
      }
    }
    if (!in_period) continue;
    const std::string key = Str(rec->message_id()) + '\0' + Str(rec->recipient());
    const std::string type = Str(rec->type());
    switch (rec->decision()) {
      case ledger::Decision::released:
        ++r.released;
        if (type == "CaseReferral") {
          ++r.flows_by_kind[{Str(rec->sender_kind()), Str(rec->recipient_kind())}];
          ++r.flows_by_region[{Str(rec->sender_region()), Str(rec->recipient_region())}];
        }
        if (type == "ReferralResponse") {
          if (Str(rec->response()) == "accepted") ++r.accepted[Str(rec->sender_kind())];
          if (Str(rec->response()) == "declined") ++r.declined[Str(rec->sender_kind())];
        }
        if (auto ms = wire::ParseRfc3339Millis(time)) released_at[key] = {*ms, Str(rec->urgency())};
        break;
      case ledger::Decision::denied:
        ++r.denied;
        ++r.denials_by_reason[Str(rec->reason())];
        break;
      case ledger::Decision::delivered: {
        ++r.delivered;
        auto it = released_at.find(key);
        auto ms = wire::ParseRfc3339Millis(time);
        if (it != released_at.end() && ms && DeadlineMs(it->second.second) > 0) {
          auto& d = r.by_urgency[it->second.second];
          ++d.delivered;
          if (*ms - it->second.first <= DeadlineMs(it->second.second)) ++d.within;
        }
        break;
      }
      case ledger::Decision::expired: ++r.expired; break;
      case ledger::Decision::erased: ++r.erased; break;
      case ledger::Decision::break_glass: ++r.break_glass_by_sender[Str(rec->sender())]; break;
      default: break;
    }
  }
  return r;
}

std::string ToMarkdown(const Report& r) {
  const std::set<std::string> x = SecondarySuppression(r);
  std::ostringstream out;
  out << "# liaison report " << r.from << " to " << r.until << " (exclusive)\n\n"
      << "Counts below 5 are shown as <5; x marks a count withheld so that no <5 can be worked "
         "out from the counts and totals beside it.\n\n"
      << "| released | denied | delivered | expired | erased |\n|---|---|---|---|---|\n"
      << "| " << Shown(x, "totals/released", r.released) << " | " << Shown(x, "totals/denied", r.denied)
      << " | " << Shown(x, "totals/delivered", r.delivered) << " | "
      << Shown(x, "totals/expired", r.expired) << " | " << Shown(x, "totals/erased", r.erased)
      << " |\n\n";
  out << "## Referral flows between agency kinds\n\n| from | to | referrals |\n|---|---|---|\n";
  for (const auto& [k, n] : r.flows_by_kind) {
    out << "| " << k.first << " | " << k.second << " | "
        << Shown(x, "flow_kind/" + k.first + "/" + k.second, n) << " |\n";
  }
  out << "\n## Referral flows between regions\n\n| from | to | referrals |\n|---|---|---|\n";
  for (const auto& [k, n] : r.flows_by_region) {
    out << "| " << k.first << " | " << k.second << " | "
        << Shown(x, "flow_region/" + k.first + "/" + k.second, n) << " |\n";
  }
  out << "\n## Acceptance of referrals, by responding kind\n\n| kind | accepted | declined | rate |\n|---|---|---|---|\n";
  std::map<std::string, int> kinds;
  for (const auto& [k, n] : r.accepted) kinds[k] = 1;
  for (const auto& [k, n] : r.declined) kinds[k] = 1;
  for (const auto& [k, unused] : kinds) {
    const uint64_t a = r.accepted.count(k) ? r.accepted.at(k) : 0, d = r.declined.count(k) ? r.declined.at(k) : 0;
    out << "| " << k << " | " << Shown(x, "accepted/" + k, a) << " | " << Shown(x, "declined/" + k, d)
        << " | "
        // A rate would reveal a withheld count: shown only when both are printed.
        << (Printed(x, "accepted/" + k, a) && Printed(x, "declined/" + k, d)
                ? std::to_string(100 * a / (a + d)) + "%"
                : "-")
        << " |\n";
  }
  out << "\n## Time to delivery against the urgency deadline (red 4 h, amber 24 h, green 72 h)\n\n"
      << "| urgency | delivered | within deadline | share |\n|---|---|---|---|\n";
  for (const auto& [u, d] : r.by_urgency) {
    const std::string delivered = "urgency/" + u + "/delivered", within = "urgency/" + u + "/within";
    out << "| " << u << " | " << Shown(x, delivered, d.delivered) << " | " << Shown(x, within, d.within)
        << " | "
        << (Printed(x, delivered, d.delivered) && Printed(x, within, d.within)
                ? std::to_string(100 * d.within / d.delivered) + "%"
                : "-")
        << " |\n";
  }
  out << "\n## Time to response against the response deadline, by urgency and responding kind\n\n"
      << "Answered: referrals whose recipient sent its ReferralResponse in the period; within: before "
         "the deadline passed; overdue: deadlines that passed in the period without a response.\n\n"
      << "| urgency | kind | answered | within deadline | share | median time to response | overdue |\n"
      << "|---|---|---|---|---|---|---|\n";
  for (const auto& [k, d] : r.responses) {
    const std::string name = "response/" + k.first + "/" + k.second;
    out << "| " << k.first << " | " << k.second << " | " << Shown(x, name + "/answered", d.answered) << " | "
        << Shown(x, name + "/within", d.within) << " | "
        << (Printed(x, name + "/answered", d.answered) && Printed(x, name + "/within", d.within)
                ? std::to_string(100 * d.within / d.answered) + "%"
                : "-")
        << " | " << MedianHours(x, name + "/answered", d) << " | " << Shown(x, name + "/overdue", d.overdue)
        << " |\n";
  }
  out << "\n## Denials by reason\n\n| reason | denials |\n|---|---|\n";
  for (const auto& [reason, n] : r.denials_by_reason) {
    out << "| " << reason << " | " << Shown(x, "denials/" + reason, n) << " |\n";
  }
  out << "\n## Break-glass uses, by sending agency\n\n| agency | uses |\n|---|---|\n";
  for (const auto& [agency, n] : r.break_glass_by_sender) {
    out << "| " << agency << " | " << Shown(x, "break_glass/" + agency, n) << " |\n";
  }
  return out.str();
}

std::string ToCsv(const Report& r) {
  const std::set<std::string> x = SecondarySuppression(r);
  std::ostringstream out;
  out << "section,key,subkey,value\n";
  out << "totals,released,," << Shown(x, "totals/released", r.released) << "\ntotals,denied,,"
      << Shown(x, "totals/denied", r.denied) << "\ntotals,delivered,,"
      << Shown(x, "totals/delivered", r.delivered) << "\ntotals,expired,,"
      << Shown(x, "totals/expired", r.expired) << "\ntotals,erased,," << Shown(x, "totals/erased", r.erased)
      << "\n";
  for (const auto& [k, n] : r.flows_by_kind) {
    out << "flow_kind," << k.first << "," << k.second << ","
        << Shown(x, "flow_kind/" + k.first + "/" + k.second, n) << "\n";
  }
  for (const auto& [k, n] : r.flows_by_region) {
    out << "flow_region," << k.first << "," << k.second << ","
        << Shown(x, "flow_region/" + k.first + "/" + k.second, n) << "\n";
  }
  for (const auto& [k, n] : r.accepted) out << "accepted," << k << ",," << Shown(x, "accepted/" + k, n) << "\n";
  for (const auto& [k, n] : r.declined) out << "declined," << k << ",," << Shown(x, "declined/" + k, n) << "\n";
  for (const auto& [u, d] : r.by_urgency) {
    out << "urgency," << u << ",delivered," << Shown(x, "urgency/" + u + "/delivered", d.delivered)
        << "\nurgency," << u << ",within_deadline," << Shown(x, "urgency/" + u + "/within", d.within)
        << "\n";
  }
  for (const auto& [k, d] : r.responses) {
    const std::string name = "response/" + k.first + "/" + k.second;
    const std::string key = "response," + k.first + "/" + k.second + ",";
    out << key << "answered," << Shown(x, name + "/answered", d.answered) << "\n"
        << key << "within_deadline," << Shown(x, name + "/within", d.within) << "\n"
        << key << "median_time_to_response," << MedianHours(x, name + "/answered", d) << "\n"
        << key << "overdue," << Shown(x, name + "/overdue", d.overdue) << "\n";
  }
  for (const auto& [reason, n] : r.denials_by_reason) {
    out << "denials," << reason << ",," << Shown(x, "denials/" + reason, n) << "\n";
  }
  for (const auto& [agency, n] : r.break_glass_by_sender) {
    out << "break_glass," << agency << ",," << Shown(x, "break_glass/" + agency, n) << "\n";
  }
  return out.str();
}

std::string FlowsSvg(const Report& r) {
  const std::set<std::string> x = SecondarySuppression(r);
  const int bar_h = 22, left = 330, width = 760, marker_w = 36;
  const int rows = static_cast<int>(std::max<size_t>(1, r.flows_by_kind.size()));
  const int height = 70 + bar_h * rows;
  // Bars are scaled to the printed counts only: a withheld count must not
  // show through the scale either.
  uint64_t max = 1;
  for (const auto& [k, n] : r.flows_by_kind) {
    if (Printed(x, "flow_kind/" + k.first + "/" + k.second, n)) max = std::max(max, n);
  }
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<defs><pattern id=\"withheld\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
         "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#ffffff\"/>"
         "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#888888\" stroke-width=\"3\"/>"
         "</pattern></defs>\n"
      << "<rect width=\"" << width << "\" height=\"" << height << "\" fill=\"#ffffff\"/>\n"
      << "<text x=\"10\" y=\"20\" font-size=\"14\">Referrals between agency kinds, "
      << XmlEscape(r.from) << " to " << XmlEscape(r.until) << "</text>\n";
  int y = 40;
  for (const auto& [k, n] : r.flows_by_kind) {
    const std::string name = "flow_kind/" + k.first + "/" + k.second;
    out << "<text x=\"10\" y=\"" << y + 15 << "\">" << XmlEscape(k.first) << " &#8594; "
        << XmlEscape(k.second) << "</text>\n";
    if (Printed(x, name, n)) {
      const int w = std::max(1, static_cast<int>((width - left - 60) * n / max));
      out << "<rect x=\"" << left << "\" y=\"" << y << "\" width=\"" << w << "\" height=\""
          << bar_h - 6 << "\" fill=\"#3b73b9\"/>\n"
          << "<text x=\"" << left + w + 6 << "\" y=\"" << y + 13 << "\">" << n << "</text>\n";
    } else {
      // No bar length for a count that is not printed: a hatched marker.
      out << "<rect x=\"" << left << "\" y=\"" << y << "\" width=\"" << marker_w << "\" height=\""
          << bar_h - 6 << "\" fill=\"url(#withheld)\" stroke=\"#888888\"/>\n"
          << "<text x=\"" << left + marker_w + 6 << "\" y=\"" << y + 13 << "\">"
          << XmlEscape(Shown(x, name, n)) << "</text>\n";
    }
    y += bar_h;
  }
  out << "<text x=\"10\" y=\"" << height - 12 << "\" font-size=\"11\">"
      << XmlEscape("Hatched: not shown; <5 is fewer than 5, x is withheld so that no <5 can be "
                   "worked out from the other counts.")
      << "</text>\n</svg>\n";
  return out.str();
}

}  // namespace liaison::audit
