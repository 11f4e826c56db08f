#include "audit_commands.h"

#include <iomanip>
#include <optional>
#include <set>
#include <utility>
#include <iostream>
#include <sstream>

#include "audit/ledger.h"
#include "liaison/keys.h"

namespace liaison::cli {
namespace {

std::string Join(const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* list,
                 const char* sep) {
  std::string out;
  if (!list) return out;
  for (const auto* s : *list) out += (out.empty() ? "" : sep) + s->str();
  return out;
}

std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

std::string Csv(const std::string& v) {
  if (v.find_first_of(",\"\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

int AuditVerify(const std::string& ledger, const std::string& public_key) {
  auto key = audit::LoadVerifyKey(public_key);
  if (!key.ok()) {
    std::cerr << key.status().message() << "\n";
    return 2;
  }
  const audit::VerifyReport report = audit::VerifyLedger(ledger, key->get());
  std::cout << report.Summary() << "\n";
  return report.ok ? 0 : 1;
}

namespace {

// A time argument: RFC 3339, or a date (midnight UTC).
std::optional<int64_t> TimeArg(const std::string& text) {
  if (text.size() == 10) return wire::ParseRfc3339Millis(text + "T00:00:00Z");
  return wire::ParseRfc3339Millis(text);
}

}  // namespace

namespace {

bool IsPolicyEvent(ledger::Decision d) {
  return d == ledger::Decision::policy_live || d == ledger::Decision::policy_refused ||
         d == ledger::Decision::dpo_key_pinned || d == ledger::Decision::dpo_key_rotated;
}

// `audit query --policy-history AGENCY`: the versions of the agency's file
// that went live, with hash and signer, its key pins, and refused reloads.
int PolicyHistory(const AuditQuery& q) {
  auto records = audit::ReadLedger(q.ledger);
  if (!records.ok()) {
    std::cerr << records.status().message() << "\n";
    return 2;
  }
  const bool vocabulary = q.policy_history == "vocabulary";
  wire::JsonCodec codec(wire::JsonCodec::Root::kLedgerRecord);
  std::ostringstream out;
  if (q.format == "table") {
    out << std::left << std::setw(25) << "time" << std::setw(17) << "event" << std::setw(30) << "file"
        << std::setw(20) << "sha256" << "signer / reason\n";
  } else if (q.format == "csv") {
    out << "seq,time,event,agency,file,file_hash,signer,previous_signer,reason,policy_version\n";
  }
  size_t matched = 0;
  for (const auto& bytes : *records) {
    const auto* r = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
    if (!IsPolicyEvent(r->decision())) continue;
    const std::string agency = Str(r->agency());
    const std::string file = Str(r->file());
    const bool mine = vocabulary ? file == "vocabulary.yaml" : agency == q.policy_history;
    // A refusal of the whole set (invalid files) names no agency: it
    // concerns every agency.
    const bool whole_set = r->decision() == ledger::Decision::policy_refused && agency.empty() && file.empty();
    if (!mine && !whole_set) continue;
    ++matched;
    const std::string event = ledger::EnumNameDecision(r->decision());
    if (q.format == "json") {
      auto json = codec.ToJson(bytes, false);
      out << (json.ok() ? *json : "{}") << "\n";
    } else if (q.format == "csv") {
      out << r->seq() << "," << Csv(Str(r->time())) << "," << event << "," << Csv(agency) << "," << Csv(file) << ","
          << Csv(Str(r->file_hash())) << "," << Csv(Str(r->signer())) << "," << Csv(Str(r->previous_signer()))
          << "," << Csv(Str(r->reason())) << "," << Csv(Str(r->policy_version())) << "\n";
    } else {
      std::string who = Str(r->signer());
      if (r->decision() == ledger::Decision::dpo_key_rotated) who = Str(r->previous_signer()) + " -> " + who;
      if (r->decision() == ledger::Decision::policy_refused) {
        who = "refused: " + Str(r->reason()) + " (kept " + Str(r->policy_version()) + ")";
      }
      out << std::left << std::setw(25) << Str(r->time()) << std::setw(17) << event << std::setw(30)
          << (file.empty() ? "-" : file) << std::setw(20) << Str(r->file_hash()).substr(0, 16) << who << "\n";
    }
  }
  std::cout << out.str();
  if (q.format == "table") std::cout << matched << " policy event(s) for " << q.policy_history << "\n";
  return 0;
}

}  // namespace

int AuditQueryCommand(const AuditQuery& q) {
  if (q.format != "table" && q.format != "json" && q.format != "csv") {
    std::cerr << "--format must be table, json or csv\n";
    return 2;
  }
  if (!q.policy_history.empty()) return PolicyHistory(q);
  std::optional<int64_t> since, until;
  if (!q.since.empty() && !(since = TimeArg(q.since))) {
    std::cerr << "--since must be a date (2026-11-01) or an RFC 3339 time\n";
    return 2;
  }
  if (!q.until.empty() && !(until = TimeArg(q.until))) {
    std::cerr << "--until must be a date (2026-12-01) or an RFC 3339 time\n";
    return 2;
  }
  std::string case_pseudonym;
  if (!q.case_ref.empty()) {
    if (q.sender.empty() || q.pseudonym_key.empty()) {
      std::cerr << "--case needs --sender (whose case reference it is) and --pseudonym-key (the "
                   "broker's pseudonym key file, which keys the case pseudonyms)\n";
      return 2;
    }
    auto key = LoadPseudonymKeyFile(q.pseudonym_key);
    if (!key.ok()) {
      std::cerr << key.status().message() << "\n";
      return 2;
    }
    case_pseudonym = audit::CasePseudonym(audit::DeriveCaseKey(*key), q.sender, q.case_ref);
  }
  if (q.format != "table" && q.format != "json" && q.format != "csv") {
    std::cerr << "--format must be table, json or csv\n";
    return 2;
  }
  auto records = audit::ReadLedger(q.ledger);
  if (!records.ok()) {
    std::cerr << records.status().message() << "\n";
    return 2;
  }
  // A thread's messages: their later records (delivered, expired, erased)
  // carry no thread id, and are found by (sender, message id).
  std::set<std::pair<std::string, std::string>> thread_messages;
  if (!q.thread.empty()) {
    for (const auto& bytes : *records) {
      const auto* r = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
      if (Str(r->thread()) == q.thread) thread_messages.insert({Str(r->sender()), Str(r->message_id())});
    }
  }
  wire::JsonCodec codec(wire::JsonCodec::Root::kLedgerRecord);
  std::ostringstream out;
  if (q.format == "csv") {
    out << "seq,time,decision,message_id,case,sender,recipient,type,purpose,legal_basis,handling,"
           "rules,released,transformed,dropped,reason,policy_version,thread,permission\n";
  } else if (q.format == "table") {
    out << std::left << std::setw(25) << "time" << std::setw(12) << "decision" << std::setw(44)
        << "sender -> recipient" << std::setw(18) << "type" << "rules; fields released / transformed / dropped\n";
  }
  size_t matched = 0;
  for (const auto& bytes : *records) {
    const auto* r = flatbuffers::GetRoot<ledger::LedgerRecord>(bytes.data());
    if (r->decision() == ledger::Decision::checkpoint) continue;
    // Policy events have their own view (--policy-history) unless asked for.
    if (IsPolicyEvent(r->decision()) && q.decision.empty()) continue;
    const std::string decision = ledger::EnumNameDecision(r->decision());
    if (!case_pseudonym.empty() && Str(r->case_()) != case_pseudonym) continue;
    if (!q.thread.empty() && Str(r->thread()) != q.thread &&
        !thread_messages.count({Str(r->sender()), Str(r->message_id())})) {
      continue;
    }
    if (!q.sender.empty() && q.case_ref.empty() && Str(r->sender()) != q.sender) continue;
    if (!q.agency.empty() && Str(r->sender()) != q.agency && Str(r->recipient()) != q.agency) continue;
    if (!q.rule.empty() && Join(r->rules(), "\n").find(q.rule) == std::string::npos) continue;
    if (!q.decision.empty() && decision != q.decision) continue;
    if (since || until) {
      const auto at = wire::ParseRfc3339Millis(Str(r->time()));
      if (!at || (since && *at < *since) || (until && *at >= *until)) continue;
    }
    ++matched;
    if (q.format == "json") {
      auto json = codec.ToJson(bytes, false);
      out << (json.ok() ? *json : "{}") << "\n";
    } else if (q.format == "csv") {
      out << r->seq() << "," << Csv(Str(r->time())) << "," << decision << "," << Csv(Str(r->message_id()))
          << "," << Csv(Str(r->case_())) << "," << Csv(Str(r->sender())) << "," << Csv(Str(r->recipient()))
          << "," << Csv(Str(r->type())) << "," << Csv(Str(r->purpose())) << "," << Csv(Str(r->legal_basis()))
          << "," << Csv(Str(r->handling())) << "," << Csv(Join(r->rules(), " ")) << ","
          << Csv(Join(r->released(), " ")) << "," << Csv(Join(r->transformed(), " ")) << ","
          << Csv(Join(r->dropped(), " ")) << "," << Csv(Str(r->reason())) << "," << Csv(Str(r->policy_version()))
          << "," << Csv(Str(r->thread())) << "," << Csv(Join(r->permission(), " ")) << "\n";
    } else {
      out << std::left << std::setw(25) << Str(r->time()) << std::setw(12) << decision << std::setw(44)
          << (Str(r->sender()) + " -> " + Str(r->recipient())) << std::setw(18) << Str(r->type())
          << Join(r->rules(), ",");
      if (r->released() || r->transformed() || r->dropped()) {
        out << "; " << Join(r->released(), ",") << " / " << Join(r->transformed(), ",") << " / "
            << Join(r->dropped(), ",");
      }
      if (r->reason()) out << " (" << Str(r->reason()) << ")";
      // A permission request's agencies asked for, a grant's allowed.
      if (r->permission()) out << " [permission: " << Join(r->permission(), ",") << "]";
      out << "\n";
    }
  }
  std::cout << out.str();
  if (q.format == "table") {
    std::cout << matched << " record(s)";
    if (!q.thread.empty()) std::cout << " of thread " << q.thread;
    std::cout << "\n";
  }
  return 0;
}

}  // namespace liaison::cli
