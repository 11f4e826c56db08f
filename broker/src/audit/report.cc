#include "audit/report.h"

#include <ctime>
#include <sstream>
#include <unordered_map>

#include "audit/ledger.h"
#include "liaison/wire.h"

namespace liaison::audit {
namespace {

std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

std::string Date(std::tm tm) {
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

int64_t DeadlineMs(const std::string& urgency) {
  if (urgency == "red") return 4LL * 3600 * 1000;
  if (urgency == "amber") return 24LL * 3600 * 1000;
  if (urgency == "green") return 72LL * 3600 * 1000;
  return -1;
}

}  // namespace

std::string Cell(uint64_t n) { return n < 5 ? "<5" : std::to_string(n); }

StatusOr<std::pair<std::string, std::string>> Period(const std::string& period, const std::string& from) {
  std::tm start{};
  if (from.empty()) {
    std::time_t now = std::time(nullptr);
    gmtime_r(&now, &start);
    start.tm_hour = start.tm_min = start.tm_sec = 0;
    // The last complete period before today.
    if (period == "week") {
      start.tm_mday -= (start.tm_wday + 6) % 7 + 7;  // Monday of last week
    } else if (period == "month") {
      start.tm_mday = 1;
      start.tm_mon -= 1;
    } else if (period == "quarter") {
      start.tm_mday = 1;
      start.tm_mon = start.tm_mon / 3 * 3 - 3;
    }
  } else if (!strptime(from.c_str(), "%Y-%m-%d", &start)) {
    return Status::InvalidArgument("--from must be a date such as 2026-10-01");
  }
  std::tm end = start;
  if (period == "week") {
    end.tm_mday += 7;
  } else if (period == "month") {
    end.tm_mon += 1;
  } else if (period == "quarter") {
    end.tm_mon += 3;
  } else {
    return Status::InvalidArgument("--period must be week, month or quarter");
  }
  timegm(&start);  // normalise
  timegm(&end);
  return std::make_pair(Date(start), Date(end));
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
  for (const auto& bytes : *records) {
    const auto* rec = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
    const std::string time = Str(rec->time());
    if (time < from || time >= until) continue;
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
  std::ostringstream out;
  out << "# liaison report " << r.from << " to " << r.until << " (exclusive)\n\n"
      << "Counts below 5 are shown as <5.\n\n"
      << "| released | denied | delivered | expired | erased |\n|---|---|---|---|---|\n"
      << "| " << Cell(r.released) << " | " << Cell(r.denied) << " | " << Cell(r.delivered) << " | "
      << Cell(r.expired) << " | " << Cell(r.erased) << " |\n\n";
  out << "## Referral flows between agency kinds\n\n| from | to | referrals |\n|---|---|---|\n";
  for (const auto& [k, n] : r.flows_by_kind) out << "| " << k.first << " | " << k.second << " | " << Cell(n) << " |\n";
  out << "\n## Referral flows between regions\n\n| from | to | referrals |\n|---|---|---|\n";
  for (const auto& [k, n] : r.flows_by_region) out << "| " << k.first << " | " << k.second << " | " << Cell(n) << " |\n";
  out << "\n## Acceptance of referrals, by responding kind\n\n| kind | accepted | declined | rate |\n|---|---|---|---|\n";
  std::map<std::string, int> kinds;
  for (const auto& [k, n] : r.accepted) kinds[k] = 1;
  for (const auto& [k, n] : r.declined) kinds[k] = 1;
  for (const auto& [k, unused] : kinds) {
    const uint64_t a = r.accepted.count(k) ? r.accepted.at(k) : 0, d = r.declined.count(k) ? r.declined.at(k) : 0;
    out << "| " << k << " | " << Cell(a) << " | " << Cell(d) << " | "
        // A rate would reveal a suppressed count: shown only when both are.
        << (a >= 5 && d >= 5 ? std::to_string(100 * a / (a + d)) + "%" : "-") << " |\n";
  }
  out << "\n## Time to delivery against the urgency deadline (red 4 h, amber 24 h, green 72 h)\n\n"
      << "| urgency | delivered | within deadline | share |\n|---|---|---|---|\n";
  for (const auto& [u, d] : r.by_urgency) {
    out << "| " << u << " | " << Cell(d.delivered) << " | " << Cell(d.within) << " | "
        << (d.within >= 5 && d.delivered - d.within >= 5
                ? std::to_string(100 * d.within / d.delivered) + "%"
                : (d.within == d.delivered && d.delivered >= 5 ? "100%" : "-"))
        << " |\n";
  }
  out << "\n## Denials by reason\n\n| reason | denials |\n|---|---|\n";
  for (const auto& [reason, n] : r.denials_by_reason) out << "| " << reason << " | " << Cell(n) << " |\n";
  out << "\n## Break-glass uses, by sending agency\n\n| agency | uses |\n|---|---|\n";
  for (const auto& [agency, n] : r.break_glass_by_sender) out << "| " << agency << " | " << Cell(n) << " |\n";
  return out.str();
}

std::string ToCsv(const Report& r) {
  std::ostringstream out;
  out << "section,key,subkey,value\n";
  out << "totals,released,," << Cell(r.released) << "\ntotals,denied,," << Cell(r.denied) << "\ntotals,delivered,,"
      << Cell(r.delivered) << "\ntotals,expired,," << Cell(r.expired) << "\ntotals,erased,," << Cell(r.erased) << "\n";
  for (const auto& [k, n] : r.flows_by_kind) out << "flow_kind," << k.first << "," << k.second << "," << Cell(n) << "\n";
  for (const auto& [k, n] : r.flows_by_region) out << "flow_region," << k.first << "," << k.second << "," << Cell(n) << "\n";
  for (const auto& [k, n] : r.accepted) out << "accepted," << k << ",," << Cell(n) << "\n";
  for (const auto& [k, n] : r.declined) out << "declined," << k << ",," << Cell(n) << "\n";
  for (const auto& [u, d] : r.by_urgency) {
    out << "urgency," << u << ",delivered," << Cell(d.delivered) << "\nurgency," << u << ",within_deadline,"
        << Cell(d.within) << "\n";
  }
  for (const auto& [reason, n] : r.denials_by_reason) out << "denials," << reason << ",," << Cell(n) << "\n";
  for (const auto& [agency, n] : r.break_glass_by_sender) out << "break_glass," << agency << ",," << Cell(n) << "\n";
  return out.str();
}

std::string FlowsSvg(const Report& r) {
  const int bar_h = 22, left = 330, width = 760;
  const int height = 50 + bar_h * static_cast<int>(std::max<size_t>(1, r.flows_by_kind.size()));
  uint64_t max = 1;
  for (const auto& [k, n] : r.flows_by_kind) max = std::max(max, n);
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<text x=\"10\" y=\"20\" font-size=\"14\">Referrals between agency kinds, " << r.from << " to " << r.until
      << "</text>\n";
  int y = 40;
  for (const auto& [k, n] : r.flows_by_kind) {
    // Small groups are drawn at the suppression threshold, labelled "<5".
    const uint64_t shown = n < 5 ? 5 : n;
    const int w = static_cast<int>((width - left - 60) * shown / std::max<uint64_t>(max, 5));
    out << "<text x=\"10\" y=\"" << y + 15 << "\">" << k.first << " &#8594; " << k.second << "</text>\n"
        << "<rect x=\"" << left << "\" y=\"" << y << "\" width=\"" << w << "\" height=\"" << bar_h - 6
        << "\" fill=\"" << (n < 5 ? "#bbbbbb" : "#3b73b9") << "\"/>\n"
        << "<text x=\"" << left + w + 6 << "\" y=\"" << y + 13 << "\">" << Cell(n) << "</text>\n";
    y += bar_h;
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace liaison::audit
