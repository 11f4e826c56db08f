#include "policy/engine.h"

#include "liaison/keys.h"

#include <date/date.h>

#include <algorithm>
#include <chrono>
#include <optional>

namespace liaison::policy {
namespace {

using flatbuffers::uoffset_t;
using flatbuffers::voffset_t;
using reflection::BaseType;

bool ParseDate(std::string_view text, int* y, int* m, int* d) {
  if (text.size() < 10 || text[4] != '-' || text[7] != '-') return false;
  auto num = [&](size_t pos, size_t n, int* out) {
    int v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      v = v * 10 + (text[i] - '0');
    }
    *out = v;
    return true;
  };
  return num(0, 4, y) && num(5, 2, m) && num(8, 2, d) && *m >= 1 && *m <= 12 && *d >= 1 && *d <= 31;
}

// The message date is the UTC date of the instant `created_at` names:
// "2026-03-01T01:00+03:00" is 28 February. One rule for every sender, whatever
// its time zone. Without a readable created_at (admission refuses an
// unreadable one), today's UTC date.
void SetMessageDate(std::string_view created_at, MessageFacts& f) {
  using namespace std::chrono;
  const std::optional<int64_t> ms = wire::ParseRfc3339Millis(created_at);
  const auto at = ms ? date::sys_time<milliseconds>(milliseconds(*ms))
                     : time_point_cast<milliseconds>(system_clock::now());
  const date::year_month_day day(date::floor<date::days>(at));
  f.message_year = static_cast<int>(day.year());
  f.message_month = static_cast<int>(static_cast<unsigned>(day.month()));
  f.message_day = static_cast<int>(static_cast<unsigned>(day.day()));
}

// Whole years from a date of birth to the message date; -1 if unknown. A
// person is 18 from the start of their 18th birthday (a 29 February birthday
// falls on 1 March in other years).
int AgeAt(std::string_view date_of_birth, const MessageFacts& facts) {
  int y, m, d;
  if (!ParseDate(date_of_birth, &y, &m, &d) || facts.message_year == 0) return -1;
  int age = facts.message_year - y;
  if (facts.message_month < m || (facts.message_month == m && facts.message_day < d)) --age;
  return age;
}

template <typename T>
void CopyScalar(flatbuffers::FlatBufferBuilder& fbb, const flatbuffers::Table& src, voffset_t slot) {
  fbb.AddElement<T>(slot, src.GetField<T>(slot, 0));
}

void CopyScalarField(flatbuffers::FlatBufferBuilder& fbb, const flatbuffers::Table& src,
                     const reflection::Field& field) {
  const voffset_t slot = field.offset();
  switch (field.type()->base_type()) {
    case BaseType::Bool:
    case BaseType::UType:
    case BaseType::UByte: CopyScalar<uint8_t>(fbb, src, slot); break;
    case BaseType::Byte: CopyScalar<int8_t>(fbb, src, slot); break;
    case BaseType::Short: CopyScalar<int16_t>(fbb, src, slot); break;
    case BaseType::UShort: CopyScalar<uint16_t>(fbb, src, slot); break;
    case BaseType::Int: CopyScalar<int32_t>(fbb, src, slot); break;
    case BaseType::UInt: CopyScalar<uint32_t>(fbb, src, slot); break;
    case BaseType::Long: CopyScalar<int64_t>(fbb, src, slot); break;
    case BaseType::ULong: CopyScalar<uint64_t>(fbb, src, slot); break;
    case BaseType::Float: CopyScalar<float>(fbb, src, slot); break;
    case BaseType::Double: CopyScalar<double>(fbb, src, slot); break;
    default: break;
  }
}

// Copies one payload tree, applying the per-leaf actions. Reuses its scratch
// buffers across tables so that the steady state does not allocate.
class Rewriter {
 public:
  Rewriter(flatbuffers::FlatBufferBuilder& fbb, const PayloadLayout& layout, const Action* actions,
           const std::array<uint8_t, 32>& key, const MessageFacts& facts, FieldReport* report)
      : fbb_(fbb), layout_(layout), actions_(actions), key_(key), facts_(facts), report_(report) {}

  // The copied table, or 0 if nothing of it is kept.
  uoffset_t CopyTable(int node_index, const flatbuffers::Table& src) {
    const Node& node = layout_.nodes[node_index];
    struct Pending {
      voffset_t slot;
      uoffset_t offset;
    };
    Pending pending[64];
    const reflection::Field* scalars[64];
    size_t n_pending = 0, n_scalars = 0;
    for (const NodeField& nf : node.fields) {
      const voffset_t slot = nf.field->offset();
      if (!src.CheckField(slot)) continue;
      uoffset_t offset = 0;
      if (nf.child >= 0) {
        offset = nf.vector_of_tables ? CopyTableVector(nf.child, src, slot)
                                     : CopyTable(nf.child, *src.GetPointer<const flatbuffers::Table*>(slot));
      } else {
        const Leaf& leaf = layout_.leaves[nf.leaf];
        const Action action = actions_[nf.leaf];
        if (action.kind == ActionKind::kDrop) {
          Report(nf.leaf, report_ ? &report_->dropped : nullptr);
          continue;
        }
        if (leaf.kind == LeafKind::kScalar) {
          scalars[n_scalars++] = nf.field;
          Report(nf.leaf, report_ ? &report_->released : nullptr);
          continue;
        }
        offset = CopyLeaf(nf.leaf, leaf, action, src, slot);
      }
      if (offset != 0) pending[n_pending++] = {slot, offset};
    }
    if (n_pending == 0 && n_scalars == 0) return 0;
    const uoffset_t start = fbb_.StartTable();
    for (size_t i = 0; i < n_pending; ++i) {
      fbb_.AddOffset(pending[i].slot, flatbuffers::Offset<void>(pending[i].offset));
    }
    for (size_t i = 0; i < n_scalars; ++i) CopyScalarField(fbb_, src, *scalars[i]);
    return fbb_.EndTable(start);
  }

  // A header text leaf (HeaderText) of `src`, the envelope or its consent,
  // under its action like a payload text; 0 if absent or dropped.
  uoffset_t CopyHeaderText(HeaderText which, const flatbuffers::Table* src) {
    const int index = layout_.HeaderLeaf(which);
    const Leaf& leaf = layout_.leaves[index];
    if (!src || !src->CheckField(leaf.field->offset())) return 0;
    if (actions_[index].kind == ActionKind::kDrop) {
      Report(index, report_ ? &report_->dropped : nullptr);
      return 0;
    }
    return CopyLeaf(index, leaf, actions_[index], *src, leaf.field->offset());
  }

 private:
  uoffset_t CopyTableVector(int child, const flatbuffers::Table& src, voffset_t slot) {
    const auto* vec = src.GetPointer<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::Table>>*>(slot);
    const size_t base = offsets_.size();
    for (uoffset_t i = 0; i < vec->size(); ++i) {
      if (uoffset_t off = CopyTable(child, *vec->Get(i))) offsets_.push_back(off);
    }
    return FinishOffsetVector(base);
  }

  uoffset_t FinishOffsetVector(size_t base) {
    const size_t n = offsets_.size() - base;
    if (n == 0) return 0;
    fbb_.StartVector(n, sizeof(uoffset_t));
    for (size_t i = offsets_.size(); i-- > base;) {
      fbb_.PushElement(flatbuffers::Offset<void>(offsets_[i]));
    }
    offsets_.resize(base);
    return fbb_.EndVector(n);
  }

  uoffset_t CopyLeaf(int index, const Leaf& leaf, Action action, const flatbuffers::Table& src,
                     voffset_t slot) {
    const bool transformed = action.kind != ActionKind::kAllow;
    if (leaf.kind == LeafKind::kString) {
      const auto* s = src.GetPointer<const flatbuffers::String*>(slot);
      std::string_view out;
      if (!Transform(action, leaf, s->string_view(), &out)) {
        Report(index, report_ ? &report_->dropped : nullptr);  // fail closed
        return 0;
      }
      Report(index, report_ ? (transformed ? &report_->transformed : &report_->released) : nullptr);
      return fbb_.CreateString(out.data(), out.size()).o;
    }
    if (leaf.kind == LeafKind::kStringVector) {
      const auto* vec = src.GetPointer<const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>*>(slot);
      const size_t base = offsets_.size();
      for (uoffset_t i = 0; i < vec->size(); ++i) {
        std::string_view out;
        if (Transform(action, leaf, vec->Get(i)->string_view(), &out)) {
          offsets_.push_back(fbb_.CreateString(out.data(), out.size()).o);
        }
      }
      const bool none_kept = offsets_.size() == base && vec->size() > 0;
      Report(index, !report_ ? nullptr
                    : none_kept ? &report_->dropped
                    : transformed ? &report_->transformed
                                  : &report_->released);
      return FinishOffsetVector(base);
    }
    // A vector of scalars (enums): allow copies it whole.
    const auto* vec = src.GetPointer<const flatbuffers::VectorOfAny*>(slot);
    const size_t elem_size = flatbuffers::GetTypeSize(leaf.field->type()->element());
    Report(index, report_ ? &report_->released : nullptr);
    fbb_.StartVector(vec->size(), elem_size);
    fbb_.PushBytes(vec->Data(), vec->size() * elem_size);
    return fbb_.EndVector(vec->size());
  }

  // False if the value cannot be transformed (then the field is dropped).
  bool Transform(Action action, const Leaf& leaf, std::string_view in, std::string_view* out) {
    switch (action.kind) {
      case ActionKind::kAllow:
        *out = in;
        return true;
      case ActionKind::kPseudonymize:
        // A blank has no identity to link: tokenised, every blank would
        // share one token and unrelated subjects would look linked.
        if (VisibleCharacters(in) == 0) return false;
        scratch_ = Pseudonym(key_, leaf.path, in);
        *out = scratch_;
        return true;
      case ActionKind::kMask: {
        // Never the whole value, nor more than half of it: "Amani" under
        // mask(last:5) shows "***ni". Code points, so a character is never split.
        size_t length = 0;
        for (unsigned char c : in) length += (c & 0xc0) != 0x80;
        const size_t keep = std::min<size_t>(action.mask_last, length / 2);
        size_t keep_from = in.size();
        for (size_t kept = 0; keep_from > 0 && kept < keep;) {
          --keep_from;
          if ((static_cast<unsigned char>(in[keep_from]) & 0xc0) != 0x80) ++kept;
        }
        scratch_.clear();
        for (size_t i = 0; i < keep_from; ++i) {
          if ((static_cast<unsigned char>(in[i]) & 0xc0) != 0x80) scratch_.push_back('*');
        }
        scratch_.append(in.substr(keep_from));
        *out = scratch_;
        return true;
      }
      case ActionKind::kGeneralizeYear: {
        int y, m, d;
        if (!ParseDate(in, &y, &m, &d)) return false;
        *out = in.substr(0, 4);
        return true;
      }
      case ActionKind::kGeneralizeAgeBand: {
        const int age = AgeAt(in, facts_);
        if (age < 0) return false;
        const int low = age / 5 * 5;
        scratch_ = std::to_string(low) + "-" + std::to_string(low + 4);
        *out = scratch_;
        return true;
      }
      default:
        return false;
    }
  }

  void Report(int leaf, std::vector<const std::string*>* list) {
    if (!list || reported_[leaf]) return;
    reported_[leaf] = true;
    list->push_back(&layout_.leaves[leaf].path);
  }

  flatbuffers::FlatBufferBuilder& fbb_;
  const PayloadLayout& layout_;
  const Action* actions_;
  const std::array<uint8_t, 32>& key_;
  const MessageFacts& facts_;
  FieldReport* report_;
  std::array<bool, kMaxLeaves> reported_{};
  std::string scratch_;
  // Offsets of vector elements under construction (nested vectors stack up).
  thread_local static std::vector<uoffset_t> offsets_;
};

thread_local std::vector<uoffset_t> Rewriter::offsets_;

bool InList(const std::vector<std::string>& list, const std::string& value) {
  for (const auto& v : list) {
    if (v == value) return true;
  }
  return false;
}

// The bit for an enum value read from a message: values past the masks'
// width (a newer or hostile sender) match no rule.
template <typename E>
uint32_t Bit(E value) {
  const auto v = static_cast<uint32_t>(value);
  return v < 32 ? 1u << v : 0;
}

bool Matches(const Rule& rule, const broker::Agency& counterpart, const MessageFacts& f) {
  if (!(rule.messages & Bit(f.type))) return false;
  if (rule.break_glass && !f.break_glass) return false;
  if (!rule.agencies.empty() && !InList(rule.agencies, counterpart.id)) return false;
  if (!rule.kinds.empty() && !InList(rule.kinds, counterpart.kind)) return false;
  if (!rule.regions.empty() && !InList(rule.regions, counterpart.region)) return false;
  if (!rule.purposes.empty() &&
      (f.purpose < 0 ||
       std::find(rule.purposes.begin(), rule.purposes.end(), f.purpose) == rule.purposes.end())) {
    return false;
  }
  if (!rule.legal_bases.empty() &&
      (f.legal_basis < 0 || std::find(rule.legal_bases.begin(), rule.legal_bases.end(),
                                      f.legal_basis) == rule.legal_bases.end())) {
    return false;
  }
  // A full mask means "any", including values this broker does not know.
  if (rule.consent != ~0u && !(rule.consent & Bit(f.consent))) return false;
  if (rule.handling != ~0u && !(rule.handling & Bit(f.handling))) return false;
  if (rule.risk != ~0u && !(rule.risk & Bit(f.risk))) return false;
  if (rule.subject_minor && f.subject_minor != rule.subject_minor) return false;
  return true;
}

}  // namespace


std::string Pseudonym(const std::array<uint8_t, 32>& key, std::string_view path,
                      std::string_view value) {
  unsigned char digest[32];
  // path || 0 || value: the same value in two fields gets two tokens.
  HmacSha256Pair(key, path, value, digest);
  return HexEncode(digest, 16);
}

namespace {

// One code point of UTF-8 at `text[*pos]`, advancing `*pos`; a byte that does
// not start a well-formed sequence is returned as itself.
uint32_t NextCodePoint(std::string_view text, size_t* pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(*pos);
  const size_t n = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3
                 : (lead >> 3) == 0x1e ? 4 : 0;
  if (n <= 1 || *pos + n > text.size()) return byte((*pos)++);
  uint32_t cp = lead & (0x7f >> n);
  for (size_t i = 1; i < n; ++i) {
    if ((byte(*pos + i) & 0xc0) != 0x80) return byte((*pos)++);
    cp = (cp << 6) | (byte(*pos + i) & 0x3f);
  }
  *pos += n;
  return cp;
}

// White space (Unicode White_Space) and characters that show nothing
// (zero-width spaces and joiners, word joiner, BOM).
bool IsBlankCodePoint(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         c == 0x180e || (c >= 0x2000 && c <= 0x200d) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x2060 || c == 0x3000 || c == 0xfeff;
}

}  // namespace

size_t VisibleCharacters(std::string_view text) {
  size_t visible = 0;
  for (size_t pos = 0; pos < text.size();) visible += !IsBlankCodePoint(NextCodePoint(text, &pos));
  return visible;
}

MessageFacts ExtractFacts(const wire::Envelope& env, const Vocabulary& vocabulary) {
  MessageFacts f;
  f.type = env.payload_type();
  if (env.purpose()) f.purpose = Vocabulary::IndexOf(vocabulary.purposes, env.purpose()->string_view());
  if (env.legal_basis()) {
    f.legal_basis = Vocabulary::IndexOf(vocabulary.legal_bases, env.legal_basis()->string_view());
  }
  if (env.consent()) f.consent = env.consent()->status();
  f.handling = env.handling();
  f.break_glass = env.break_glass() &&
                  VisibleCharacters(env.break_glass()->string_view()) >= kMinBreakGlassCharacters;
  SetMessageDate(env.created_at() ? env.created_at()->string_view() : std::string_view(), f);
  const wire::RiskAssessment* risk = nullptr;
  if (const auto* referral = env.payload_as_CaseReferral()) {
    risk = referral->risk();
    if (referral->subject() && referral->subject()->date_of_birth()) {
      const int age = AgeAt(referral->subject()->date_of_birth()->string_view(), f);
      if (age >= 0) f.subject_minor = age < 18;
    }
  } else if (const auto* update = env.payload_as_CaseUpdate()) {
    risk = update->risk();
  }
  if (risk) f.risk = risk->level();
  return f;
}

const Rule* FirstMatch(const std::vector<Rule>& rules, const broker::Agency& counterpart,
                       const MessageFacts& facts) {
  for (const Rule& rule : rules) {
    if (Matches(rule, counterpart, facts)) return &rule;
  }
  return nullptr;
}

Decision Decide(const AgencyPolicy& sender, const AgencyPolicy& recipient,
                const MessageFacts& facts) {
  Decision d;
  d.release = FirstMatch(sender.release, *recipient.agency, facts);
  if (!d.release) {
    d.reason = "no-release-rule";
    return d;
  }
  d.accept = FirstMatch(recipient.accept, *sender.agency, facts);
  if (!d.accept) d.reason = "no-accept-rule";
  return d;
}

void CombinePlans(const Decision& decision, wire::Payload type, Action* out) {
  const size_t tag = static_cast<size_t>(type);
  const auto& release = decision.release->plans[tag];
  const auto& accept = decision.accept->plans[tag];
  for (size_t i = 0; i < release.size(); ++i) {
    out[i] = CombineActions(release[i].action, accept[i].action);
  }
}

Status Rewrite(const wire::Envelope& in, const std::string& sender_id,
               const std::string& recipient_id, const Action* actions,
               const std::array<uint8_t, 32>& pseudonym_key, const MessageFacts& facts,
               flatbuffers::FlatBufferBuilder& fbb, FieldReport* report, std::string_view thread) {
  fbb.Clear();
  const PayloadLayout* layout = SchemaLayout::Get().For(in.payload_type());
  if (!layout || !in.payload()) return Status::InvalidArgument("message has no payload");
  Rewriter rewriter(fbb, *layout, actions, pseudonym_key, facts, report);
  uoffset_t payload = rewriter.CopyTable(0, *static_cast<const flatbuffers::Table*>(in.payload()));
  if (payload == 0) payload = fbb.EndTable(fbb.StartTable());  // every field dropped

  auto id = fbb.CreateString(in.id());
  auto case_ref = fbb.CreateString(in.case_ref());
  auto recipient = wire::CreateRecipient(fbb, fbb.CreateString(recipient_id));
  auto to = fbb.CreateVector(&recipient, 1);
  auto from = fbb.CreateString(sender_id);
  auto purpose = fbb.CreateString(in.purpose());
  auto legal_basis = fbb.CreateString(in.legal_basis());
  // Header free text may name people: it goes by the rules like the payload
  // (docs/policies.md section 6); the structured fields pass unchanged.
  const auto* envelope_table = reinterpret_cast<const flatbuffers::Table*>(&in);
  flatbuffers::Offset<wire::Consent> consent;
  if (in.consent()) {
    const auto* consent_table = reinterpret_cast<const flatbuffers::Table*>(in.consent());
    consent = wire::CreateConsent(
        fbb, in.consent()->status(), fbb.CreateString(in.consent()->recorded_at()),
        flatbuffers::Offset<flatbuffers::String>(
            rewriter.CopyHeaderText(HeaderText::kConsentScope, consent_table)));
  }
  flatbuffers::Offset<flatbuffers::String> restrictions(
      rewriter.CopyHeaderText(HeaderText::kHandlingRestrictions, envelope_table));
  auto created_at = fbb.CreateString(in.created_at());
  auto expires_at = fbb.CreateString(in.expires_at());
  flatbuffers::Offset<flatbuffers::String> break_glass(
      rewriter.CopyHeaderText(HeaderText::kBreakGlass, envelope_table));
  auto thread_ref = thread.empty() ? 0 : fbb.CreateString(thread.data(), thread.size());
  auto envelope = wire::CreateEnvelope(
      fbb, id, case_ref, to, from, purpose, legal_basis, consent, in.handling(), restrictions,
      in.urgency(), in.source_reliability(), in.information_accuracy(), created_at, expires_at,
      break_glass, in.schema_version(), in.payload_type(), flatbuffers::Offset<void>(payload), thread_ref);
  wire::FinishEnvelopeBuffer(fbb, envelope);
  if (!wire::VerifyEnvelope({fbb.GetBufferPointer(), fbb.GetSize()})) {
    return Status::Internal("the rewritten message does not verify");
  }
  return Status::Ok();
}

}  // namespace liaison::policy
