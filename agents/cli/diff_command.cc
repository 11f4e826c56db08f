#include "diff_command.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <tuple>

#include "audit/ledger.h"
#include "explain/policy_diff.h"
#include "policy/trust.h"

namespace liaison::cli {
namespace {

namespace fs = std::filesystem;

// Same stand-in secret as explain: pseudonyms are not compared, only actions.
constexpr std::string_view kStandInSecret = "liaison policy tools: not the broker's secret";

StatusOr<std::vector<policy::SampleMessage>> LoadSamples(const std::string& dir) {
  std::vector<fs::path> paths;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".json") paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  std::vector<policy::SampleMessage> out;
  for (const auto& p : paths) {
    std::ifstream in(p);
    std::ostringstream text;
    text << in.rdbuf();
    auto binary = codec.ToBinary(text.str(), p.string());
    if (!binary.ok()) return binary.status();
    out.push_back({p.filename().string(), std::move(*binary)});
  }
  return out;
}

// "30d", "12h", a date or an RFC 3339 time: the start of the window (ms).
std::optional<int64_t> SinceMillis(const std::string& text) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  if (text.size() >= 2 && (text.back() == 'd' || text.back() == 'h') &&
      text.find_first_not_of("0123456789") == text.size() - 1) {
    const int64_t n = std::stoll(text.substr(0, text.size() - 1));
    return now - n * (text.back() == 'd' ? 86400000LL : 3600000LL);
  }
  if (text.size() == 10) return wire::ParseRfc3339Millis(text + "T00:00:00Z");
  return wire::ParseRfc3339Millis(text);
}

// Flows in the ledger's metadata since `since`: who sent what type for what
// purpose to whom (no contents: the ledger holds none).
StatusOr<std::vector<policy::SeenFlow>> LedgerFlows(const std::string& ledger, int64_t since) {
  auto records = audit::ReadLedger(ledger);
  if (!records.ok()) return records.status();
  std::map<std::tuple<std::string, std::string, std::string, std::string>, uint64_t> counts;
  for (const auto& bytes : *records) {
    const auto* r = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
    if (r->decision() != ledger::Decision::released && r->decision() != ledger::Decision::denied) continue;
    const auto at = r->time() ? wire::ParseRfc3339Millis(r->time()->str()) : std::nullopt;
    if (!at || *at < since || !r->sender() || !r->recipient() || !r->type()) continue;
    ++counts[{r->sender()->str(), r->recipient()->str(), r->type()->str(), r->purpose() ? r->purpose()->str() : ""}];
  }
  std::vector<policy::SeenFlow> out;
  for (const auto& [k, n] : counts) out.push_back({std::get<0>(k), std::get<1>(k), std::get<2>(k), std::get<3>(k), n});
  return out;
}

StatusOr<policy::SideInfo> Describe(const std::string& dir, const policy::PolicySet& set) {
  auto files = policy::DescribePolicyFiles(dir);
  if (!files.ok()) return files.status();
  policy::SideInfo side{dir, set.version(), {}};
  for (const auto& f : *files) side.signers.emplace_back(f.file, f.signer);
  return side;
}

}  // namespace

int PolicyDiffCommand(const DiffOptions& o) {
  spdlog::set_level(spdlog::level::off);  // admission's event logs: a simulation is not one
  auto before = policy::PolicySet::Load(o.before_dir, kStandInSecret);
  if (!before.ok()) {
    std::cerr << o.before_dir << ": " << before.status().message() << "\npolicy diff: the old set does not load\n";
    return 1;
  }
  auto after = policy::PolicySet::Load(o.after_dir, kStandInSecret);
  if (!after.ok()) {
    std::cerr << o.after_dir << ": " << after.status().message() << "\npolicy diff: the new set does not load\n";
    return 1;
  }
  std::string messages = o.messages_dir;
  if (messages.empty()) {
    messages = (fs::path(o.after_dir) / "tests" / "messages").string();
    if (!fs::is_directory(messages)) messages = (fs::path(o.before_dir) / "tests" / "messages").string();
  }
  auto samples = LoadSamples(messages);
  if (!samples.ok()) {
    std::cerr << samples.status().message() << "\n";
    return 2;
  }
  if (samples->empty()) {
    std::cerr << "policy diff: no sample messages (*.json) in " << messages
              << "; give --messages DIR (flows are tried with real messages)\n";
    return 2;
  }
  std::vector<policy::SeenFlow> seen;
  if (!o.ledger.empty()) {
    auto since = SinceMillis(o.since);
    if (!since) {
      std::cerr << "--since must be like 30d, 12h, a date (2026-11-01) or an RFC 3339 time\n";
      return 2;
    }
    auto flows = LedgerFlows(o.ledger, *since);
    if (!flows.ok()) {
      std::cerr << flows.status().message() << "\n";
      return 2;
    }
    seen = std::move(*flows);
  }
  auto diff = policy::DiffPolicies(**before, **after, *samples, seen);
  if (!diff.ok()) {
    std::cerr << diff.status().message() << "\n";
    return 1;
  }
  auto old_side = Describe(o.before_dir, **before);
  auto new_side = Describe(o.after_dir, **after);
  if (!old_side.ok() || !new_side.ok()) {
    std::cerr << (old_side.ok() ? new_side.status() : old_side.status()).message() << "\n";
    return 1;
  }
  std::cout << (o.json ? policy::FormatDiffJson(*diff, *old_side, *new_side)
                       : policy::FormatDiffText(*diff, *old_side, *new_side));
  if (!o.html.empty()) {
    std::ofstream page(o.html, std::ios::trunc);
    page << policy::FormatDiffHtml(*diff, *old_side, *new_side);
    page.close();
    if (!page) {
      std::cerr << "cannot write " << o.html << "\n";
      return 1;
    }
    std::cerr << "wrote " << o.html << "\n";
  }
  return diff->widens() ? kExitWidens : 0;
}

}  // namespace liaison::cli
