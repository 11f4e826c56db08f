// Monitoring and evaluation reports computed from the ledger alone: referral
// flows between agency kinds and regions, acceptance rates, time to delivery
// against the urgency deadlines, denials by reason, break-glass uses. Counts
// below 5 are shown as "<5" so that no small group can be singled out, and
// further counts are withheld ("x") where a "<5" could otherwise be worked
// out from the counts and totals printed beside it (docs/audit.md §6).
#ifndef LIAISON_BROKER_AUDIT_REPORT_H_
#define LIAISON_BROKER_AUDIT_REPORT_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
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
  // Response deadlines, by (urgency, responding kind): referrals answered
  // in the period (the first ReferralResponse of their recipient), of
  // those the ones answered before their clock fired, the clocks that
  // fired in the period (overdue records), and the times to response.
  struct Responses {
    uint64_t answered = 0, within = 0, overdue = 0;
    std::vector<int64_t> response_ms;  // one per answered referral
  };
  std::map<std::pair<std::string, std::string>, Responses> responses;
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

// Counts below this are shown as "<5".
inline constexpr uint64_t kMinCount = 5;

// A cell: the number, or "<5" below five.
std::string Cell(uint64_t n);

// Counts tied together by sums, for complementary suppression. A cell below
// kMinCount is sensitive; a hidden cell is never printed but is a count a
// reader could compute (within = delivered - past the deadline).
struct CountTable {
  struct Term {
    size_t cell;
    int coefficient;  // +1 or -1
  };
  std::vector<uint64_t> values;
  std::vector<bool> hidden;
  std::vector<std::vector<Term>> sums;  // each: sum of coefficient * value = 0

  size_t Add(uint64_t value, bool is_hidden = false);
};

// Which cells are not printed: hidden ones, every count below kMinCount, and
// as few further ones as the sums require (the smallest first), until no
// count below kMinCount can be worked out exactly from what is printed —
// neither by linear algebra over all the sums, nor from one sum together with
// what a reader knows of withheld cells ("<5" is 0..4, "x" is 5 or more).
std::vector<bool> Suppress(const CountTable& table);
// Whether `cell`'s exact value follows from the printed cells (linear algebra
// over the sums, and each sum with the bounds above). For tests and Suppress.
bool Exposed(const CountTable& table, const std::vector<bool>& withheld, size_t cell);

// The counts of one report that are withheld beyond those below kMinCount,
// by cell name ("flow_kind/exit-programme/youth-welfare", "denials/<reason>",
// "totals/denied", "urgency/red/within", ...).
std::set<std::string> SecondarySuppression(const Report& r);

std::string ToMarkdown(const Report& r);
std::string ToCsv(const Report& r);
// A bar chart of the referral flows between kinds, as SVG (valid XML):
// withheld counts get a hatched marker and their label, never a bar length.
std::string FlowsSvg(const Report& r);

}  // namespace liaison::audit

#endif  // LIAISON_BROKER_AUDIT_REPORT_H_
