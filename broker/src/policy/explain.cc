#include "policy/explain.h"

#include <iomanip>
#include <sstream>

namespace liaison::policy {
namespace {

// Marks the leaves of `node` present in `table`.
using flatbuffers::uoffset_t;

void MarkPresent(const PayloadLayout& layout, int node_index, const flatbuffers::Table& table,
                 std::vector<bool>& present) {
  for (const NodeField& nf : layout.nodes[node_index].fields) {
    if (!table.CheckField(nf.field->offset())) continue;
    if (nf.leaf >= 0) {
      present[nf.leaf] = true;
    } else if (nf.vector_of_tables) {
      const auto* vec =
          table.GetPointer<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::Table>>*>(
              nf.field->offset());
      for (uoffset_t i = 0; i < vec->size(); ++i) MarkPresent(layout, nf.child, *vec->Get(i), present);
    } else {
      MarkPresent(layout, nf.child, *table.GetPointer<const flatbuffers::Table*>(nf.field->offset()),
                  present);
    }
  }
}

std::string DescribeEntry(const Rule& rule, const LeafDecision& d) {
  std::string who = std::string(rule.release ? "release" : "accept") + " rule '" + rule.id + "'";
  switch (d.entry) {
    case LeafDecision::kOthers:
      return who + ": others: " + ActionText(*rule.others);
    case LeafDecision::kUnnamed:
      return who + ": not named, so not shared";
    case LeafDecision::kInapplicable:
      return who + ": its action cannot apply to this field, so it is dropped";
    default: {
      const FieldEntry& e = rule.entries[d.entry];
      return who + " line " + std::to_string(e.line) + ": " + e.pattern + ": " + ActionText(e.action);
    }
  }
}

}  // namespace

StatusOr<Explanation> Explain(const PolicySet& policies, const broker::Agency& from,
                              const broker::Agency& to, const wire::Envelope& envelope) {
  Explanation e;
  e.from = &from;
  e.to = &to;
  const PayloadLayout* layout = SchemaLayout::Get().For(envelope.payload_type());
  if (!layout || !envelope.payload()) return Status::InvalidArgument("the message has no payload");
  const MessageFacts facts = ExtractFacts(envelope, policies.vocabulary());
  e.decision = Decide(policies.For(from), policies.For(to), facts);
  if (!e.decision.allowed()) return e;

  const size_t tag = static_cast<size_t>(facts.type);
  std::vector<bool> present(layout->leaves.size());
  MarkPresent(*layout, 0, *static_cast<const flatbuffers::Table*>(envelope.payload()), present);
  std::array<Action, kMaxLeaves> actions;
  CombinePlans(e.decision, facts.type, actions.data());
  for (size_t i = 0; i < layout->leaves.size(); ++i) {
    if (!present[i]) continue;
    const LeafDecision& r = e.decision.release->plans[tag][i];
    const LeafDecision& a = e.decision.accept->plans[tag][i];
    // The stricter side decides; on a tie, both said the same: name the sender's.
    const bool by_release = actions[i] == r.action;
    e.fields.push_back({&layout->leaves[i].path, actions[i],
                        by_release ? DescribeEntry(*e.decision.release, r)
                                   : DescribeEntry(*e.decision.accept, a)});
  }
  flatbuffers::FlatBufferBuilder fbb;
  LIAISON_RETURN_IF_ERROR(Rewrite(envelope, from.id, to.id, actions.data(),
                                  policies.For(to).pseudonym_key, facts, fbb, nullptr));
  e.received.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  return e;
}

std::string FormatExplanation(const Explanation& e, const wire::Envelope& envelope) {
  std::ostringstream out;
  out << e.from->id << " -> " << e.to->id << ": " << wire::EnumNamePayload(envelope.payload_type())
      << ", purpose " << (envelope.purpose() ? envelope.purpose()->str() : "(none)")
      << ", legal basis " << (envelope.legal_basis() ? envelope.legal_basis()->str() : "(none)")
      << (e.decision.break_glass() ? ", BREAK-GLASS" : "") << "\n";
  if (!e.decision.allowed()) {
    out << "decision: DENIED (" << e.decision.reason << "): ";
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
  out << "fields of the message (the stricter of the two rules applies):\n";
  for (const FieldExplanation& f : e.fields) {
    out << "  " << std::left << std::setw(32) << *f.path << " " << std::setw(24)
        << ActionText(f.action) << " " << f.decided_by << "\n";
  }
  return out.str();
}

}  // namespace liaison::policy
