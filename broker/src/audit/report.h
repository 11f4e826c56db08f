// Monitoring and evaluation reports computed from the ledger alone: referral
// flows between agency kinds and regions, acceptance rates, time to delivery
// against the urgency deadlines, denials by reason, break-glass uses. Counts
// below 5 are shown as "<5" so that no small group can be singled out.
#ifndef LIAISON_BROKER_AUDIT_REPORT_H_
#define LIAISON_BROKER_AUDIT_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "liaison/status.h"

namespace liaison::audit {

struct Report {
  std::string from, until;  // the period, [from, until)
  std::map<std::pair<std::string, std::string>, uint64_t> flows_by_kind;    // referrals released
  std::map<std::pair<std::string, std::string>, uint64_t> flows_by_region;
  std::map<std::string, uint64_t> accepted, declined;   // responses, by responding kind
  struct Deadline {
    uint64_t delivered = 0, within = 0;
  };
  std::map<std::string, Deadline> by_urgency;           // red / amber / green
  std::map<std::string, uint64_t> denials_by_reason;
  std::map<std::string, uint64_t> break_glass_by_sender;
  uint64_t released = 0, denied = 0, delivered = 0, expired = 0, erased = 0;
};

// "week", "month" or "quarter" from `from` (YYYY-MM-DD; empty = the period
// that ended last, by UTC today).
StatusOr<std::pair<std::string, std::string>> Period(const std::string& period, const std::string& from);

// Reads `ledger_path` and counts the records whose time is in [from, until).
StatusOr<Report> BuildReport(const std::string& ledger_path, const std::string& from,
                             const std::string& until);

// A cell: the number, or "<5" below five.
std::string Cell(uint64_t n);
std::string ToMarkdown(const Report& r);
std::string ToCsv(const Report& r);
// A bar chart of the referral flows between kinds.
std::string FlowsSvg(const Report& r);

}  // namespace liaison::audit

#endif  // LIAISON_BROKER_AUDIT_REPORT_H_
