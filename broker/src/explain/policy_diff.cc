#include "explain/policy_diff.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>
#include <tuple>

namespace liaison::policy {
namespace {

// One side of a flow: the decision and the fields' actions and lines.
struct Side {
  bool present = false;  // both agencies exist in this set
  std::string decision;
  bool released = false;
  std::map<std::string, std::pair<Action, RuleLines>> fields;
};

std::string Rules(const Explanation& e) {
  std::string out;
  if (e.decision.release) out += e.decision.release->id;
  if (e.decision.accept) out += (out.empty() ? "" : ", ") + e.decision.accept->id;
  return out;
}

StatusOr<Side> Decide(const PolicySet& set, const std::string& sender, const std::string& recipient,
                      const std::vector<uint8_t>& message) {
  Side side;
  const broker::Agency* from = set.directory().Find(sender);
  const broker::Agency* to = set.directory().Find(recipient);
  if (!from || !to) {
    side.decision = "no agency " + (from ? recipient : sender);
    return side;
  }
  side.present = true;
  auto e = Explain(set, *from, *to, message);
  if (!e.ok()) return e.status();
  if (e->released()) {
    side.released = true;
    side.decision = "released (" + Rules(*e) + ")";
    for (const auto& f : e->fields) side.fields[*f.path] = {f.action, {f.release, f.accept}};
  } else if (e->code == wire::Code::denied) {
    side.decision = "denied (" + e->reason + ")";
  } else {
    side.decision = std::string("rejected (") + wire::EnumNameCode(e->code) + ")";
  }
  return side;
}

// `message` with its purpose replaced (for a flow seen in the ledger).
std::vector<uint8_t> WithPurpose(const std::vector<uint8_t>& message, const std::string& purpose) {
  std::unique_ptr<wire::EnvelopeT> e(wire::GetEnvelope(message.data())->UnPack());
  e->purpose = purpose;
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, e.get()));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::string KindOf(const PolicySet& a, const PolicySet& b, const std::string& id) {
  const broker::Agency* agency = b.directory().Find(id);
  if (!agency) agency = a.directory().Find(id);
  return agency ? agency->kind : "";
}

}  // namespace

bool FlowDiff::widens() const {
  if (released_after && !released_before) return true;
  return std::any_of(fields.begin(), fields.end(), [](const FieldChange& f) { return f.widens; });
}

std::string PolicyDiff::Summary() const {
  std::ostringstream out;
  size_t changed = 0;
  for (const auto& f : flows) changed += f.changed() ? 1 : 0;
  out << flows.size() << " flows compared, " << changed << " changed: " << newly_denied << " flows newly denied, "
      << newly_released << " newly released, " << fields_widened << " fields newly shared";
  if (!widened_by_kind.empty()) {
    out << " (";
    bool first = true;
    for (const auto& [kind, n] : widened_by_kind) {
      out << (first ? "" : ", ") << n << " with " << kind;
      first = false;
    }
    out << ")";
  }
  out << ", " << fields_narrowed << " fields narrowed";
  return out.str();
}

StatusOr<PolicyDiff> DiffPolicies(const PolicySet& before, const PolicySet& after,
                                  const std::vector<SampleMessage>& samples, const std::vector<SeenFlow>& seen) {
  std::set<std::string> agencies;
  for (const PolicySet* set : {&before, &after}) {
    for (const auto& a : set->directory().agencies()) agencies.insert(a.id);
  }
  // Flows by (sender, recipient, type, purpose, sample), in a stable order.
  struct Planned {
    const SampleMessage* sample;
    std::vector<uint8_t> message;
    std::string seen;
  };
  std::map<std::tuple<std::string, std::string, std::string, std::string, std::string>, Planned> plan;
  std::map<std::string, const SampleMessage*> sample_of_type;
  for (const auto& s : samples) {
    const wire::Envelope* e = wire::GetEnvelope(s.envelope.data());
    const std::string type = wire::EnumNamePayload(e->payload_type());
    const std::string purpose = e->purpose() ? e->purpose()->str() : "";
    sample_of_type.emplace(type, &s);
    for (const auto& from : agencies) {
      for (const auto& to : agencies) {
        if (from != to) plan[{from, to, type, purpose, s.name}] = {&s, s.envelope, "sample"};
      }
    }
  }
  PolicyDiff diff;
  for (const auto& f : seen) {
    auto sample = sample_of_type.find(f.type);
    if (sample == sample_of_type.end()) {
      diff.skipped.push_back(f.sender + " -> " + f.recipient + " " + f.type + "/" + f.purpose + " (" +
                             std::to_string(f.count) + " in the ledger): no sample message of type " + f.type +
                             " in tests/messages");
      continue;
    }
    const std::string tag = "ledger (" + std::to_string(f.count) + ")";
    bool merged = false;
    for (auto& [key, p] : plan) {
      if (std::get<0>(key) == f.sender && std::get<1>(key) == f.recipient && std::get<2>(key) == f.type &&
          std::get<3>(key) == f.purpose) {
        p.seen = tag + ", sample";
        merged = true;
      }
    }
    if (!merged) {
      plan[{f.sender, f.recipient, f.type, f.purpose, sample->second->name}] = {
          sample->second, WithPurpose(sample->second->envelope, f.purpose), tag};
    }
  }

  for (const auto& [key, p] : plan) {
    const auto& [sender, recipient, type, purpose, sample_name] = key;
    auto old_side = Decide(before, sender, recipient, p.message);
    if (!old_side.ok()) return old_side.status();
    auto new_side = Decide(after, sender, recipient, p.message);
    if (!new_side.ok()) return new_side.status();
    FlowDiff d;
    d.sender = sender;
    d.recipient = recipient;
    d.recipient_kind = KindOf(before, after, recipient);
    d.type = type;
    d.purpose = purpose;
    d.sample = sample_name;
    d.seen = p.seen;
    d.before = old_side->decision;
    d.after = new_side->decision;
    d.released_before = old_side->released;
    d.released_after = new_side->released;
    std::set<std::string> paths;
    for (const auto& [path, v] : old_side->fields) paths.insert(path);
    for (const auto& [path, v] : new_side->fields) paths.insert(path);
    for (const auto& path : paths) {
      FieldChange c;
      c.path = path;
      if (auto it = old_side->fields.find(path); it != old_side->fields.end()) {
        c.before = it->second.first;
        c.lines_before = it->second.second;
      }
      if (auto it = new_side->fields.find(path); it != new_side->fields.end()) {
        c.after = it->second.first;
        c.lines_after = it->second.second;
      }
      if (c.before == c.after) continue;
      // What the new action reveals beyond the old: anything it shows that
      // the intersection of both does not.
      c.widens = !(CombineActions(c.before, c.after) == c.after);
      const bool narrows = !(CombineActions(c.before, c.after) == c.before);
      if (c.widens) {
        ++diff.fields_widened;
        ++diff.widened_by_kind[d.recipient_kind];
      }
      if (narrows) ++diff.fields_narrowed;
      d.fields.push_back(std::move(c));
    }
    if (d.released_before && !d.released_after) ++diff.newly_denied;
    if (!d.released_before && d.released_after) ++diff.newly_released;
    diff.flows.push_back(std::move(d));
  }
  return diff;
}

namespace {

std::string Line(const RuleLine& l) {
  if (l.at.empty() && l.entry.empty()) return "-";
  return l.at + " \"" + l.entry + "\"";
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  return out + "\"";
}

std::string Html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string SignersText(const SideInfo& side) {
  std::string out;
  for (const auto& [file, signer] : side.signers) {
    out += "    " + file + ": " + (signer.empty() ? "unsigned" : "signed by " + signer) + "\n";
  }
  return out;
}

std::string RuleLinesJson(const RuleLines& l) {
  return "{\"release\":{\"at\":" + JsonString(l.release.at) + ",\"entry\":" + JsonString(l.release.entry) +
         "},\"accept\":{\"at\":" + JsonString(l.accept.at) + ",\"entry\":" + JsonString(l.accept.entry) + "}}";
}

std::string SideJson(const SideInfo& s) {
  std::string out = "{\"dir\":" + JsonString(s.dir) + ",\"version\":" + JsonString(s.version) + ",\"signers\":{";
  bool first = true;
  for (const auto& [file, signer] : s.signers) {
    out += (first ? "" : ",") + JsonString(file) + ":" + JsonString(signer);
    first = false;
  }
  return out + "}}";
}

}  // namespace

std::string FormatDiffText(const PolicyDiff& diff, const SideInfo& before, const SideInfo& after) {
  std::ostringstream out;
  out << "policy diff: " << before.dir << " (version " << before.version << ") -> " << after.dir << " (version "
      << after.version << ")\n";
  out << "  before:\n" << SignersText(before) << "  after:\n" << SignersText(after);
  for (const auto& f : diff.flows) {
    if (!f.changed()) continue;
    out << "\n" << (f.widens() ? "WIDENS  " : "changed ") << f.sender << " -> " << f.recipient << "  " << f.type
        << " / " << (f.purpose.empty() ? "(no purpose)" : f.purpose) << "  [" << f.seen << ": " << f.sample
        << "]\n";
    out << "  before: " << f.before << "\n  after:  " << f.after << "\n";
    for (const auto& c : f.fields) {
      out << "  " << (c.widens ? "+ " : "- ") << c.path << ": " << ActionText(c.before) << " -> "
          << ActionText(c.after) << (c.widens ? "   (newly shared)" : "") << "\n";
      out << "      release before " << Line(c.lines_before.release) << "\n      release after  "
          << Line(c.lines_after.release) << "\n      accept before  " << Line(c.lines_before.accept)
          << "\n      accept after   " << Line(c.lines_after.accept) << "\n";
    }
  }
  for (const auto& s : diff.skipped) out << "\nnot previewed: " << s << "\n";
  out << "\nsummary: " << diff.Summary() << "\n";
  out << (diff.widens() ? "this change WIDENS what is shared (exit code 3)\n" : "nothing is newly shared\n");
  return out.str();
}

std::string FormatDiffJson(const PolicyDiff& diff, const SideInfo& before, const SideInfo& after) {
  std::ostringstream out;
  out << "{\"before\":" << SideJson(before) << ",\"after\":" << SideJson(after) << ",\"summary\":{\"text\":"
      << JsonString(diff.Summary()) << ",\"flows\":" << diff.flows.size() << ",\"newly_denied\":" << diff.newly_denied
      << ",\"newly_released\":" << diff.newly_released << ",\"fields_widened\":" << diff.fields_widened
      << ",\"fields_narrowed\":" << diff.fields_narrowed << ",\"widens\":" << (diff.widens() ? "true" : "false")
      << ",\"widened_by_kind\":{";
  bool first = true;
  for (const auto& [kind, n] : diff.widened_by_kind) {
    out << (first ? "" : ",") << JsonString(kind) << ":" << n;
    first = false;
  }
  out << "}},\"changes\":[";
  first = true;
  for (const auto& f : diff.flows) {
    if (!f.changed()) continue;
    out << (first ? "" : ",") << "\n{\"sender\":" << JsonString(f.sender) << ",\"recipient\":" << JsonString(f.recipient)
        << ",\"recipient_kind\":" << JsonString(f.recipient_kind) << ",\"type\":" << JsonString(f.type)
        << ",\"purpose\":" << JsonString(f.purpose) << ",\"sample\":" << JsonString(f.sample)
        << ",\"seen\":" << JsonString(f.seen) << ",\"before\":" << JsonString(f.before)
        << ",\"after\":" << JsonString(f.after) << ",\"widens\":" << (f.widens() ? "true" : "false")
        << ",\"fields\":[";
    first = false;
    bool first_field = true;
    for (const auto& c : f.fields) {
      out << (first_field ? "" : ",") << "{\"path\":" << JsonString(c.path)
          << ",\"before\":" << JsonString(ActionText(c.before)) << ",\"after\":" << JsonString(ActionText(c.after))
          << ",\"widens\":" << (c.widens ? "true" : "false") << ",\"lines_before\":" << RuleLinesJson(c.lines_before)
          << ",\"lines_after\":" << RuleLinesJson(c.lines_after) << "}";
      first_field = false;
    }
    out << "]}";
  }
  out << "],\"not_previewed\":[";
  first = true;
  for (const auto& s : diff.skipped) {
    out << (first ? "" : ",") << JsonString(s);
    first = false;
  }
  out << "]}\n";
  return out.str();
}

std::string FormatDiffHtml(const PolicyDiff& diff, const SideInfo& before, const SideInfo& after) {
  std::set<std::string> senders, recipients;
  // Per (sender, recipient): 2 widens, 1 changed otherwise, 0 unchanged.
  std::map<std::pair<std::string, std::string>, int> cell;
  for (const auto& f : diff.flows) {
    senders.insert(f.sender);
    recipients.insert(f.recipient);
    int& c = cell[{f.sender, f.recipient}];
    c = std::max(c, f.widens() ? 2 : f.changed() ? 1 : 0);
  }
  std::ostringstream out;
  out << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
         "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
         "<title>liaison policy change preview</title>\n<style>\n"
         "body{font-family:sans-serif;margin:1.5em;color:#222}\n"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}\n"
         "td,th{border:1px solid #999;padding:.25em .5em;font-size:90%;vertical-align:top}\n"
         ".widens{background:#f4b6b6}.changed{background:#fbe3a6}.same{background:#d5ecd5}.none{background:#eee}\n"
         "code{font-size:95%}\nh2{margin-top:2em}\n"
         "</style></head><body>\n";
  out << "<h1>Policy change preview</h1>\n<p id=\"summary\"><strong>" << Html(diff.Summary()) << "</strong></p>\n";
  out << "<p id=\"verdict\" class=\"" << (diff.widens() ? "widens" : "same") << "\">"
      << (diff.widens() ? "This change WIDENS what is shared." : "Nothing is newly shared.") << "</p>\n";
  out << "<h2>Signers</h2>\n<table id=\"signers\"><tr><th>file</th><th>before (" << Html(before.dir) << ", "
      << Html(before.version) << ")</th><th>after (" << Html(after.dir) << ", " << Html(after.version)
      << ")</th></tr>\n";
  std::map<std::string, std::pair<std::string, std::string>> files;
  for (const auto& [f, s] : before.signers) files[f].first = s.empty() ? "unsigned" : s;
  for (const auto& [f, s] : after.signers) files[f].second = s.empty() ? "unsigned" : s;
  for (const auto& [f, s] : files) {
    out << "<tr><td><code>" << Html(f) << "</code></td><td>" << Html(s.first.empty() ? "(absent)" : s.first)
        << "</td><td>" << Html(s.second.empty() ? "(absent)" : s.second) << "</td></tr>\n";
  }
  out << "</table>\n<h2>Partners</h2>\n<p>Rows send, columns receive. <span class=\"widens\">&nbsp;widens&nbsp;</span> "
         "<span class=\"changed\">&nbsp;changed&nbsp;</span> <span class=\"same\">&nbsp;unchanged&nbsp;</span></p>\n"
         "<table id=\"matrix\"><tr><th>sender \\ recipient</th>";
  for (const auto& r : recipients) out << "<th>" << Html(r) << "</th>";
  out << "</tr>\n";
  for (const auto& s : senders) {
    out << "<tr><th>" << Html(s) << "</th>";
    for (const auto& r : recipients) {
      auto it = cell.find({s, r});
      const char* cls = it == cell.end() ? "none" : it->second == 2 ? "widens" : it->second == 1 ? "changed" : "same";
      const char* text = it == cell.end() ? "" : it->second == 2 ? "widens" : it->second == 1 ? "changed" : "=";
      out << "<td class=\"" << cls << "\" data-pair=\"" << Html(s) << "&gt;" << Html(r) << "\">" << text << "</td>";
    }
    out << "</tr>\n";
  }
  out << "</table>\n<h2>Changes</h2>\n";
  size_t n = 0;
  for (const auto& f : diff.flows) {
    if (!f.changed()) continue;
    ++n;
    out << "<section class=\"flow " << (f.widens() ? "widens" : "changed") << "\"><h3>" << Html(f.sender)
        << " &rarr; " << Html(f.recipient) << ": " << Html(f.type) << " / " << Html(f.purpose) << "</h3>\n"
        << "<p>before: <strong>" << Html(f.before) << "</strong><br>after: <strong>" << Html(f.after)
        << "</strong><br><small>seen: " << Html(f.seen) << "; sample " << Html(f.sample) << "</small></p>\n";
    if (!f.fields.empty()) {
      out << "<table><tr><th>field</th><th>before</th><th>after</th><th>release rule line (before / after)</th>"
             "<th>accept rule line (before / after)</th></tr>\n";
      for (const auto& c : f.fields) {
        out << "<tr class=\"" << (c.widens ? "widens" : "changed") << "\"><td><code>" << Html(c.path)
            << "</code></td><td>" << Html(ActionText(c.before)) << "</td><td>" << Html(ActionText(c.after))
            << "</td><td>" << Html(Line(c.lines_before.release)) << "<br>" << Html(Line(c.lines_after.release))
            << "</td><td>" << Html(Line(c.lines_before.accept)) << "<br>" << Html(Line(c.lines_after.accept))
            << "</td></tr>\n";
      }
      out << "</table>\n";
    }
    out << "</section>\n";
  }
  if (n == 0) out << "<p>No flow changes.</p>\n";
  for (const auto& s : diff.skipped) out << "<p class=\"changed\">not previewed: " << Html(s) << "</p>\n";
  out << "</body></html>\n";
  return out.str();
}

}  // namespace liaison::policy
