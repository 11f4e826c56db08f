#include "explain/explain.h"

#include <flatbuffers/reflection.h>

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <sstream>

#include "core/admission.h"

namespace liaison::policy {
namespace {

using flatbuffers::uoffset_t;
using flatbuffers::voffset_t;
using reflection::BaseType;

// The id explain gives a message that has none: the broker requires one.
constexpr std::string_view kStandInId = "explain";

bool AddressedToOnly(const wire::Envelope& env, const std::string& recipient) {
  if (!env.id() || env.id()->size() == 0 || !env.to() || env.to()->size() != 1) return false;
  const wire::Recipient* r = env.to()->Get(0);
  return r->agency() && r->agency()->string_view() == recipient && !r->kind() && !r->region();
}

// `env` with `to` = [recipient] and a stand-in id if it has none; every
// other field copied as it is (an empty text stays empty, an absent one
// absent), so that the broker's checks see what the sender wrote.
std::vector<uint8_t> AddressTo(const wire::Envelope& env, const std::string& recipient) {
  const reflection::Schema& schema = wire::EnvelopeSchema();
  const reflection::Object& object = *schema.root_table();
  const auto& table = *reinterpret_cast<const flatbuffers::Table*>(&env);
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<std::pair<voffset_t, uoffset_t>> offsets;
  std::vector<const reflection::Field*> scalars;
  for (const reflection::Field* field : *object.fields()) {
    const voffset_t slot = field->offset();
    const BaseType type = field->type()->base_type();
    const std::string_view name = field->name()->string_view();
    if (name == "to") {
      auto address = wire::CreateRecipient(fbb, fbb.CreateString(recipient));
      offsets.push_back({slot, fbb.CreateVector(&address, 1).o});
    } else if (name == "id" && (!env.id() || env.id()->size() == 0)) {
      offsets.push_back({slot, fbb.CreateString(kStandInId.data(), kStandInId.size()).o});
    } else if (!table.CheckField(slot)) {
      continue;
    } else if (type == BaseType::String) {
      offsets.push_back({slot, fbb.CreateString(table.GetPointer<const flatbuffers::String*>(slot)).o});
    } else if (type == BaseType::Obj || type == BaseType::Union) {
      const reflection::Object& child = type == BaseType::Obj
                                            ? *schema.objects()->Get(field->type()->index())
                                            : flatbuffers::GetUnionType(schema, object, *field, table);
      offsets.push_back(
          {slot, flatbuffers::CopyTable(fbb, schema, child,
                                        *table.GetPointer<const flatbuffers::Table*>(slot)).o});
    } else if (type != BaseType::Vector) {
      scalars.push_back(field);
    }
  }
  const uoffset_t start = fbb.StartTable();
  for (const auto& [slot, offset] : offsets) fbb.AddOffset(slot, flatbuffers::Offset<void>(offset));
  for (const reflection::Field* field : scalars) {
    const size_t size = flatbuffers::GetTypeSize(field->type()->base_type());
    fbb.Align(size);
    fbb.PushBytes(table.GetAddressOf(field->offset()), size);
    fbb.TrackField(field->offset(), fbb.GetSize());
  }
  wire::FinishEnvelopeBuffer(fbb, flatbuffers::Offset<wire::Envelope>(fbb.EndTable(start)));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

const Rule* RuleById(const std::vector<Rule>& rules, const std::string& id) {
  auto it = std::find_if(rules.begin(), rules.end(), [&](const Rule& r) { return r.id == id; });
  return it == rules.end() ? nullptr : &*it;
}

RuleLine LineFor(const Rule& rule, const LeafDecision& d) {
  RuleLine line{rule.source, "(not named)", d.action, "not named, so not shared"};
  if (d.entry == LeafDecision::kOthers) {
    line = {rule.file + ":" + std::to_string(rule.others_line), "others: " + ActionText(*rule.others),
            d.action, ""};
  } else if (d.entry >= 0) {
    const FieldEntry& e = rule.entries[d.entry];
    line = {rule.file + ":" + std::to_string(e.line), e.pattern + ": " + ActionText(e.action),
            d.action, d.inapplicable ? "its action cannot apply to this field, so it is dropped" : ""};
  }
  return line;
}

// The text of an integer scalar of `type`: an enum value by name.
std::string ScalarText(const reflection::Type& type, BaseType base, int64_t value) {
  if (base == BaseType::Bool) return value ? "true" : "false";
  if (type.index() >= 0) {
    const auto* e = wire::EnvelopeSchema().enums()->Get(type.index());
    if (const auto* v = e->values()->LookupByKey(value)) return v->name()->str();
  }
  return std::to_string(value);
}

void AddValues(const Leaf& leaf, const flatbuffers::Table& table, std::vector<std::string>& out) {
  const voffset_t slot = leaf.field->offset();
  if (!table.CheckField(slot)) return;
  const reflection::Type& type = *leaf.field->type();
  switch (leaf.kind) {
    case LeafKind::kString:
      out.push_back(table.GetPointer<const flatbuffers::String*>(slot)->str());
      break;
    case LeafKind::kStringVector:
      for (const auto* s : *table.GetPointer<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>*>(slot)) {
        out.push_back(s->str());
      }
      break;
    case LeafKind::kScalar:
      out.push_back(type.base_type() == BaseType::Float || type.base_type() == BaseType::Double
                        ? flatbuffers::GetAnyFieldS(table, *leaf.field, nullptr)
                        : ScalarText(type, type.base_type(), flatbuffers::GetAnyFieldI(table, *leaf.field)));
      break;
    case LeafKind::kScalarVector: {
      const auto* vec = table.GetPointer<const flatbuffers::VectorOfAny*>(slot);
      for (uoffset_t i = 0; i < vec->size(); ++i) {
        out.push_back(ScalarText(type, type.element(), flatbuffers::GetAnyVectorElemI(vec, type.element(), i)));
      }
      break;
    }
  }
}

void CollectNode(const PayloadLayout& layout, int node_index, const flatbuffers::Table& table,
                 std::vector<std::vector<std::string>>& values) {
  for (const NodeField& nf : layout.nodes[node_index].fields) {
    if (!table.CheckField(nf.field->offset())) continue;
    if (nf.leaf >= 0) {
      AddValues(layout.leaves[nf.leaf], table, values[nf.leaf]);
    } else if (nf.vector_of_tables) {
      for (const auto* item : *table.GetPointer<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::Table>>*>(nf.field->offset())) {
        CollectNode(layout, nf.child, *item, values);
      }
    } else {
      CollectNode(layout, nf.child, *table.GetPointer<const flatbuffers::Table*>(nf.field->offset()),
                  values);
    }
  }
}

// Which report list names leaf `path` (the dispatcher's names point into the
// layout): the fields present in the message, by what the broker did.
enum class Reported { kAbsent, kReleased, kTransformed, kDropped };
Reported FindReported(const broker::RecipientOutcome& o, const std::string* path) {
  auto in = [&](const std::vector<const std::string*>& list) {
    return std::find(list.begin(), list.end(), path) != list.end();
  };
  if (in(o.dropped)) return Reported::kDropped;
  if (in(o.transformed)) return Reported::kTransformed;
  if (in(o.released)) return Reported::kReleased;
  return Reported::kAbsent;
}

// The fields of the recipient's copy, each with what the broker did to it and
// the lines of both rules.
void ExplainFields(const broker::Delivery& delivery, Explanation& e) {
  const wire::Envelope& received = *wire::GetEnvelope(delivery.envelope.data());
  const PayloadLayout& layout = *SchemaLayout::Get().For(received.payload_type());
  const auto values = LeafValues(layout, received);
  std::array<Action, kMaxLeaves> combined;
  CombinePlans(e.decision, received.payload_type(), combined.data());
  const size_t tag = static_cast<size_t>(received.payload_type());
  for (size_t i = 0; i < layout.leaves.size(); ++i) {
    const Reported reported = FindReported(delivery.outcome, &layout.leaves[i].path);
    if (reported == Reported::kAbsent) continue;
    FieldExplanation f{&layout.leaves[i].path, combined[i], values[i],
                       LineFor(*e.decision.release, e.decision.release->plans[tag][i]),
                       LineFor(*e.decision.accept, e.decision.accept->plans[tag][i]), ""};
    if (reported == Reported::kDropped && f.action.kind != ActionKind::kDrop) {
      f.note = "the value cannot take " + ActionText(f.action) + ", so it is dropped";
      f.action = Action{};
    } else if (reported == Reported::kReleased && f.action.kind != ActionKind::kAllow) {
      f.note = "the value is passed as it is: " + ActionText(f.action) + " leaves it unchanged";
      f.action = Action{ActionKind::kAllow};
    }
    e.fields.push_back(std::move(f));
  }
}

}  // namespace

std::vector<std::vector<std::string>> LeafValues(const PayloadLayout& layout,
                                                 const wire::Envelope& envelope) {
  std::vector<std::vector<std::string>> values(layout.leaves.size());
  if (envelope.payload()) {
    CollectNode(layout, 0, *static_cast<const flatbuffers::Table*>(envelope.payload()), values);
  }
  const auto* header = reinterpret_cast<const flatbuffers::Table*>(&envelope);
  const int scope = layout.HeaderLeaf(HeaderText::kConsentScope);
  if (envelope.consent()) {
    AddValues(layout.leaves[scope], *reinterpret_cast<const flatbuffers::Table*>(envelope.consent()),
              values[scope]);
  }
  for (HeaderText t : {HeaderText::kHandlingRestrictions, HeaderText::kBreakGlass}) {
    AddValues(layout.leaves[layout.HeaderLeaf(t)], *header, values[layout.HeaderLeaf(t)]);
  }
  return values;
}

StatusOr<Explanation> Explain(const PolicySet& policies, const broker::Agency& from,
                              const broker::Agency& to, std::span<const uint8_t> message,
                              const broker::Limits& limits) {
  Explanation e;
  e.from = &from;
  e.to = &to;
  std::vector<uint8_t> readdressed;
  if (const wire::Envelope* env = wire::VerifyEnvelope(message); env && !AddressedToOnly(*env, to.id)) {
    readdressed = AddressTo(*env, to.id);
    message = readdressed;
  }
  broker::Admission admission = broker::Dispatcher(limits).Admit(policies, from, message);
  if (admission.code != wire::Code::ok) {
    e.code = admission.code;
    e.reason = admission.detail;
    return e;
  }
  const broker::Delivery* delivery = nullptr;
  const broker::RecipientOutcome* outcome = nullptr;
  for (const auto& d : admission.deliveries) {
    if (d.recipient == &to) delivery = &d;
  }
  for (const auto& u : admission.unresolved) {
    if (u.recipient == to.id) outcome = &u;
  }
  if (delivery) outcome = &delivery->outcome;
  if (!outcome) return Status::Internal("the broker's admission did not decide for " + to.id);
  if (outcome->code == wire::Code::internal_error) {
    return Status::Internal("the broker could not rewrite the message for " + to.id);
  }
  e.code = outcome->code;
  e.reason = outcome->reason;
  for (const char* reason : {"no-release-rule", "no-accept-rule"}) {
    if (e.reason == reason) e.decision.reason = reason;  // Decision's reasons are literals
  }
  if (!outcome->rules.empty()) e.decision.release = RuleById(policies.For(from).release, outcome->rules[0]);
  if (outcome->rules.size() > 1) e.decision.accept = RuleById(policies.For(to).accept, outcome->rules[1]);
  if (!delivery) return e;
  if (!e.decision.allowed()) return Status::Internal("the rules the broker applied are not in the policy set");
  e.received.assign(delivery->envelope.data(), delivery->envelope.data() + delivery->envelope.size());
  ExplainFields(*delivery, e);
  return e;
}

namespace {

// A value for one line of text: quoted, control characters escaped, long
// values shortened (the recipient's copy follows in full).
std::string Shown(const std::string& value) {
  constexpr size_t kMax = 48;
  std::string out = "\"";
  size_t shown = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = value[i];
    if ((c & 0xc0) != 0x80 && ++shown > kMax) {
      out += "...";
      break;
    }
    if (c < 0x20 || c == '"' || c == '\\') {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + (shown > kMax ? "" : "\"");
}

std::string DescribeLine(const char* side, const Rule& rule, const RuleLine& line) {
  return std::string(side) + " rule '" + rule.id + "' " + line.at + ": " + line.entry +
         (line.note.empty() ? "" : " (" + line.note + ")");
}

}  // namespace

std::string FormatExplanation(const Explanation& e, const wire::Envelope& envelope) {
  std::ostringstream out;
  out << e.from->id << " -> " << e.to->id << ": " << wire::EnumNamePayload(envelope.payload_type())
      << ", purpose " << (envelope.purpose() ? envelope.purpose()->str() : "(none)")
      << ", legal basis " << (envelope.legal_basis() ? envelope.legal_basis()->str() : "(none)")
      << (e.decision.break_glass() ? ", BREAK-GLASS" : "") << "\n";
  if (e.rejected()) {
    out << "decision: REJECTED (" << wire::EnumNameCode(e.code) << "): " << e.reason
        << "; the broker refuses the whole message\n";
    if (envelope.payload_type() == wire::Payload::PermissionRequest ||
        envelope.payload_type() == wire::Payload::PermissionGrant) {
      // Explain has no threads: it cannot admit one, and no rule would
      // decide it anyway. Say so rather than leave a DPO guessing.
      out << "note: no release or accept rule decides a " << wire::EnumNamePayload(envelope.payload_type())
          << "; the broker delivers a request to the thread's originator only and accepts a grant from the "
             "originator only (docs/policies.md section 9a)\n";
    }
    return out.str();
  }
  if (!e.released()) {
    out << "decision: DENIED (" << e.reason << "): ";
    if (!e.decision.release) {
      out << e.from->id << " has no release rule that matches this message to " << e.to->id;
    } else {
      out << "release rule '" << e.decision.release->id << "' of " << e.from->id
          << " matches, but " << e.to->id << " has no accept rule that matches it";
    }
    out << "\n";
    return out.str();
  }
  out << "decision: RELEASED under release rule '" << e.decision.release->id << "' ("
      << e.decision.release->source << ") and accept rule '" << e.decision.accept->id << "' ("
      << e.decision.accept->source << ")\n";
  out << "fields of the message (each gets what both rules allow), as the recipient's copy has them:\n";
  for (const FieldExplanation& f : e.fields) {
    std::ostringstream line;
    line << "  " << std::left << std::setw(32) << *f.path << " " << std::setw(22) << ActionText(f.action);
    for (size_t i = 0; i < f.values.size(); ++i) line << (i ? ", " : " ") << Shown(f.values[i]);
    std::string text = line.str();
    text.erase(text.find_last_not_of(' ') + 1);
    out << text << "\n";
    if (!f.note.empty()) out << "      " << f.note << "\n";
    out << "      " << DescribeLine("release", *e.decision.release, f.release) << "\n";
    out << "      " << DescribeLine("accept", *e.decision.accept, f.accept) << "\n";
  }
  return out.str();
}

namespace {

flatbuffers::Offset<explain::RuleLine> BuildLine(flatbuffers::FlatBufferBuilder& fbb, const Rule* rule,
                                                 const RuleLine* line) {
  if (!rule) return 0;
  if (!line) return explain::CreateRuleLineDirect(fbb, rule->id.c_str(), rule->source.c_str());
  return explain::CreateRuleLineDirect(fbb, rule->id.c_str(), line->at.c_str(), line->entry.c_str(),
                                       ActionText(line->action).c_str(),
                                       line->note.empty() ? nullptr : line->note.c_str());
}

}  // namespace

flatbuffers::DetachedBuffer BuildExplanation(const Explanation& e, const std::string& policy_version,
                                             bool broker_pseudonyms) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<explain::Field>> fields;
  for (const FieldExplanation& f : e.fields) {
    std::vector<flatbuffers::Offset<flatbuffers::String>> values;
    for (const auto& v : f.values) values.push_back(fbb.CreateString(v));
    fields.push_back(explain::CreateFieldDirect(
        fbb, f.path->c_str(), ActionText(f.action).c_str(), values.empty() ? nullptr : &values,
        BuildLine(fbb, e.decision.release, &f.release), BuildLine(fbb, e.decision.accept, &f.accept),
        f.note.empty() ? nullptr : f.note.c_str()));
  }
  flatbuffers::Offset<wire::Envelope> received = 0;
  if (!e.received.empty()) {
    const reflection::Schema& schema = wire::EnvelopeSchema();
    received = flatbuffers::CopyTable(fbb, schema, *schema.root_table(),
                                      *flatbuffers::GetAnyRoot(e.received.data()))
                   .o;
  }
  const char* decision = e.released() ? "released" : e.rejected() ? "rejected" : "denied";
  auto root = explain::CreateExplanationDirect(
      fbb, e.from->id.c_str(), e.to->id.c_str(), decision, wire::EnumNameCode(e.code),
      e.reason.empty() ? nullptr : e.reason.c_str(), BuildLine(fbb, e.decision.release, nullptr),
      BuildLine(fbb, e.decision.accept, nullptr), e.decision.break_glass(), policy_version.c_str(),
      broker_pseudonyms ? "broker key" : "stand-in key", fields.empty() ? nullptr : &fields,
      received);
  fbb.Finish(root);
  return fbb.Release();
}

}  // namespace liaison::policy
