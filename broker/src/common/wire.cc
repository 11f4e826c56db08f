#include "liaison/wire.h"

#include <flatbuffers/idl.h>
#include <flatbuffers/reflection.h>
#include <date/date.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <sstream>

#include "liaison/keys.h"

namespace liaison::wire {

extern const uint8_t kenvelopeBfbs[];
extern const size_t kenvelopeBfbsSize;
extern const uint8_t kcontrolBfbs[];
extern const size_t kcontrolBfbsSize;
extern const uint8_t kledgerBfbs[];
extern const size_t kledgerBfbsSize;
extern const uint8_t kgatewayBfbs[];
extern const size_t kgatewayBfbsSize;
extern const uint8_t kbenchBfbs[];
extern const size_t kbenchBfbsSize;
extern const uint8_t kexplainBfbs[];
extern const size_t kexplainBfbsSize;

namespace {

// Generous ceilings against hostile nesting; real messages are far below.
constexpr flatbuffers::uoffset_t kMaxDepth = 32;
constexpr flatbuffers::uoffset_t kMaxTables = 100000;

template <typename T>
const T* VerifyAs(std::span<const uint8_t> bytes, const char* identifier) {
  if (bytes.size() < 8 || bytes.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) return nullptr;
  flatbuffers::Verifier verifier(bytes.data(), bytes.size(), kMaxDepth, kMaxTables);
  if (!verifier.VerifyBuffer<T>(identifier)) return nullptr;
  return flatbuffers::GetRoot<T>(bytes.data());
}

}  // namespace

const Envelope* VerifyEnvelope(std::span<const uint8_t> bytes) {
  return VerifyEnvelopeWithin(bytes, bytes.size() * kMaxExpansion).envelope;
}
const Receipt* VerifyReceipt(std::span<const uint8_t> bytes) {
  return VerifyAs<Receipt>(bytes, ReceiptIdentifier());
}
const Ack* VerifyAck(std::span<const uint8_t> bytes) { return VerifyAs<Ack>(bytes, nullptr); }
const Hello* VerifyHello(std::span<const uint8_t> bytes) { return VerifyAs<Hello>(bytes, nullptr); }
const Welcome* VerifyWelcome(std::span<const uint8_t> bytes) {
  return VerifyAs<Welcome>(bytes, nullptr);
}

std::span<const uint8_t> Aligned(std::span<const uint8_t> bytes, std::vector<uint8_t>& storage) {
  if (reinterpret_cast<uintptr_t>(bytes.data()) % 8 == 0) return bytes;
  storage.assign(bytes.begin(), bytes.end());  // operator new aligns to 16
  return storage;
}

const reflection::Schema& EnvelopeSchema() { return *reflection::GetSchema(kenvelopeBfbs); }
const reflection::Schema& ControlSchema() { return *reflection::GetSchema(kcontrolBfbs); }

JsonCodec::JsonCodec(Root root) : root_(root) { Init(); }

void JsonCodec::Init() const {
  const Root root = root_;
  flatbuffers::IDLOptions opts;
  opts.strict_json = true;
  opts.natural_utf8 = true;
  opts.indent_step = 2;
  // Ledger lines are read by people and tools: every field, defaults included
  // (a "released" decision is the enum's zero).
  opts.output_default_scalars_in_json = root == Root::kLedgerRecord;
  parser_ = std::make_unique<flatbuffers::Parser>(opts);
  const char* root_type = nullptr;  // set when not the schema's own root_type
  bool loaded = false;
  switch (root) {
    case Root::kEnvelope: loaded = parser_->Deserialize(kenvelopeBfbs, kenvelopeBfbsSize); break;
    case Root::kLedgerRecord: loaded = parser_->Deserialize(kledgerBfbs, kledgerBfbsSize); break;
    case Root::kReceipt: loaded = parser_->Deserialize(kcontrolBfbs, kcontrolBfbsSize); break;
    case Root::kAck:
      loaded = parser_->Deserialize(kcontrolBfbs, kcontrolBfbsSize);
      root_type = "liaison.wire.Ack";
      break;
    case Root::kGatewayAccepted: root_type = "liaison.gateway.Accepted"; break;
    case Root::kGatewayPending: root_type = "liaison.gateway.Pending"; break;
    case Root::kGatewayInboxPage: root_type = "liaison.gateway.InboxPage"; break;
    case Root::kGatewayAcked: root_type = "liaison.gateway.Acked"; break;
    case Root::kGatewayProblem: root_type = "liaison.gateway.Problem"; break;
    case Root::kGatewayHealth: root_type = "liaison.gateway.Health"; break;
    case Root::kBenchReport: loaded = parser_->Deserialize(kbenchBfbs, kbenchBfbsSize); break;
    case Root::kPolicyExplanation:
      loaded = parser_->Deserialize(kexplainBfbs, kexplainBfbsSize);
      break;
  }
  if (root_type != nullptr && root != Root::kAck) {
    loaded = parser_->Deserialize(kgatewayBfbs, kgatewayBfbsSize);
  }
  // The schema is embedded at build time; failing here is a build bug.
  if (!loaded) std::abort();
  if (root_type != nullptr) {
    if (!parser_->SetRootType(root_type)) std::abort();
    parser_->file_identifier_.clear();
  }
}

JsonCodec::~JsonCodec() = default;

StatusOr<std::vector<uint8_t>> JsonCodec::ToBinary(std::string_view json,
                                                   std::string_view source_name) const {
  std::string text(json);
  std::string name(source_name);
  if (!parser_->ParseJson(text.c_str(), name.c_str())) {
    std::string error = parser_->error_;
    // A failed parse leaves state behind in the parser (its field stack):
    // start from a fresh one so that bad input cannot pile it up.
    Init();
    // The parser prefixes "file(line, col): error: "; keep it, it says where.
    while (!error.empty() && (error.back() == '\n' || error.back() == ' ')) error.pop_back();
    return Status::InvalidArgument(error);
  }
  const uint8_t* data = parser_->builder_.GetBufferPointer();
  std::vector<uint8_t> out(data, data + parser_->builder_.GetSize());
  parser_->builder_.Clear();
  return out;
}

StatusOr<std::string> JsonCodec::ToJson(std::span<const uint8_t> bytes, bool pretty) const {
  bool valid = false;
  switch (root_) {
    case Root::kEnvelope: valid = VerifyEnvelope(bytes) != nullptr; break;
    case Root::kReceipt: valid = VerifyReceipt(bytes) != nullptr; break;
    case Root::kAck: valid = VerifyAck(bytes) != nullptr; break;
    case Root::kGatewayAccepted: valid = VerifyAs<gateway::Accepted>(bytes, nullptr); break;
    case Root::kGatewayPending: valid = VerifyAs<gateway::Pending>(bytes, nullptr); break;
    case Root::kGatewayInboxPage: valid = VerifyAs<gateway::InboxPage>(bytes, nullptr); break;
    case Root::kGatewayAcked: valid = VerifyAs<gateway::Acked>(bytes, nullptr); break;
    case Root::kGatewayProblem: valid = VerifyAs<gateway::Problem>(bytes, nullptr); break;
    case Root::kGatewayHealth: valid = VerifyAs<gateway::Health>(bytes, nullptr); break;
    case Root::kBenchReport: valid = VerifyAs<bench::Report>(bytes, nullptr); break;
    case Root::kPolicyExplanation: valid = VerifyAs<explain::Explanation>(bytes, nullptr); break;
    case Root::kLedgerRecord: {
      flatbuffers::Verifier verifier(bytes.data(), bytes.size(), kMaxDepth, kMaxTables);
      valid = verifier.VerifyBuffer<liaison::ledger::LedgerRecord>(nullptr);
      break;
    }
  }
  if (!valid) return Status::InvalidArgument("not a valid liaison FlatBuffer of the expected type");
  parser_->opts.indent_step = pretty ? 2 : -1;
  std::string text;
  if (!flatbuffers::GenerateText(*parser_, bytes.data(), &text)) {
    return Status::InvalidArgument("message holds text that is not valid UTF-8");
  }
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

bool IsValidUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

namespace {

// Walks a not yet verified Envelope through the reflection schema, checking
// each object with the verifier's bounds checks before reading it, and
// counts what each reference expands to; on the way it notes the first
// string that is not UTF-8 (by its field path, built only then). Stops at
// the first fault or as soon as the count passes the budget: every step
// adds at least 4 bytes to the count, so the walk takes at most budget / 4
// steps.
class ExpansionWalk {
 public:
  enum class Result { kOk, kMalformed, kOverBudget };

  ExpansionWalk(std::span<const uint8_t> bytes, size_t budget)
      : verifier_(bytes.data(), bytes.size(), kMaxDepth, kMaxTables),
        schema_(EnvelopeSchema()),
        base_(bytes.data()),
        budget_(budget) {}

  Result Run() {
    if (!verifier_.Verify<flatbuffers::uoffset_t>(0)) return Result::kMalformed;
    const auto* root = flatbuffers::GetRoot<flatbuffers::Table>(base_);
    return VisitTable(*schema_.root_table(), root);
  }
  size_t expanded() const { return expanded_; }
  const std::string& non_utf8_field() const { return non_utf8_field_; }

 private:
  bool Charge(size_t bytes) {
    expanded_ += bytes;
    return expanded_ <= budget_;
  }

  Result VisitTable(const reflection::Object& object, const flatbuffers::Table* table) {
    if (!table->VerifyTableStart(verifier_)) return Result::kMalformed;
    const uint8_t* vtable = table->GetVTable();
    // The verifier checked the vtable's size field and that the vtable
    // fits; a vtable too short to hold the table's size (found by
    // fuzz_inbound: 2 bytes at the buffer's end) would be read past.
    const auto vtable_size = flatbuffers::ReadScalar<flatbuffers::voffset_t>(vtable);
    if (vtable_size < 2 * sizeof(flatbuffers::voffset_t)) return Result::kMalformed;
    const auto inline_size = flatbuffers::ReadScalar<flatbuffers::voffset_t>(vtable + sizeof(flatbuffers::voffset_t));
    if (!verifier_.VerifyFromPointer(reinterpret_cast<const uint8_t*>(table), inline_size)) {
      return Result::kMalformed;
    }
    if (!Charge(std::max<size_t>(inline_size, sizeof(flatbuffers::soffset_t)))) return Result::kOverBudget;
    for (const reflection::Field* field : *object.fields()) {
      if (field->deprecated()) continue;  // never read, never copied
      if (Result r = VisitField(object, *table, *field); r != Result::kOk) return r;
    }
    verifier_.EndTable();
    return Result::kOk;
  }

  Result VisitField(const reflection::Object& object, const flatbuffers::Table& table,
                    const reflection::Field& field) {
    const auto* base = reinterpret_cast<const uint8_t*>(&table);
    const flatbuffers::voffset_t at = table.GetOptionalFieldOffset(field.offset());
    if (at == 0) return Result::kOk;
    const reflection::BaseType type = field.type()->base_type();
    if (type <= reflection::Double) {  // scalars, bools and union type tags
      const size_t size = flatbuffers::GetTypeSize(type);
      return verifier_.VerifyFieldStruct(base, at, size, size) ? Result::kOk : Result::kMalformed;
    }
    if (type == reflection::Obj && schema_.objects()->Get(field.type()->index())->is_struct()) {
      const reflection::Object* st = schema_.objects()->Get(field.type()->index());
      return verifier_.VerifyFieldStruct(base, at, st->bytesize(), st->minalign()) ? Result::kOk
                                                                                  : Result::kMalformed;
    }
    if (!verifier_.VerifyOffset(base, at)) return Result::kMalformed;
    const uint8_t* target = base + at + flatbuffers::ReadScalar<flatbuffers::uoffset_t>(base + at);
    path_.push_back({&field, -1});
    const Result r = VisitTarget(object, table, field, type, target);
    path_.pop_back();
    return r;
  }

  Result VisitTarget(const reflection::Object& object, const flatbuffers::Table& table,
                     const reflection::Field& field, reflection::BaseType type, const uint8_t* target) {
    const auto* base = reinterpret_cast<const uint8_t*>(&table);
    switch (type) {
      case reflection::String: return VisitString(reinterpret_cast<const flatbuffers::String*>(target));
      case reflection::Obj:
        return VisitTable(*schema_.objects()->Get(field.type()->index()),
                          reinterpret_cast<const flatbuffers::Table*>(target));
      case reflection::Union: {
        const reflection::Field* tag_field = object.fields()->LookupByKey(
            (field.name()->str() + flatbuffers::UnionTypeFieldSuffix()).c_str());
        if (!tag_field) return Result::kMalformed;
        // Fields are walked by name, so the tag may not have been checked yet.
        const flatbuffers::voffset_t tag_at = table.GetOptionalFieldOffset(tag_field->offset());
        if (tag_at != 0 && !verifier_.VerifyFieldStruct(base, tag_at, 1, 1)) return Result::kMalformed;
        const auto tag = table.GetField<uint8_t>(tag_field->offset(), 0);
        const reflection::EnumVal* member =
            schema_.enums()->Get(field.type()->index())->values()->LookupByKey(tag);
        // A member from a newer schema, or NONE beside a value: nothing of
        // it is read or passed on (NONE's type has no object to index).
        if (!member || !member->union_type() || member->union_type()->base_type() != reflection::Obj) {
          return Result::kOk;
        }
        return VisitTable(*schema_.objects()->Get(member->union_type()->index()),
                          reinterpret_cast<const flatbuffers::Table*>(target));
      }
      case reflection::Vector: return VisitVector(field, target);
      default: return Result::kMalformed;  // not in our schemas
    }
  }

  Result VisitString(const flatbuffers::String* s) {
    if (!verifier_.VerifyString(s)) return Result::kMalformed;
    if (!Charge(sizeof(flatbuffers::uoffset_t) + s->size() + 1)) return Result::kOverBudget;
    if (non_utf8_field_.empty() && !IsValidUtf8(s->string_view())) {
      for (const Step& step : path_) {
        if (!non_utf8_field_.empty()) non_utf8_field_ += '.';
        non_utf8_field_ += step.field->name()->string_view();
        if (step.index >= 0) non_utf8_field_ += "[" + std::to_string(step.index) + "]";
      }
    }
    return Result::kOk;
  }

  Result VisitVector(const reflection::Field& field, const uint8_t* vec) {
    const reflection::BaseType element = field.type()->element();
    const reflection::Object* object =
        element == reflection::Obj ? schema_.objects()->Get(field.type()->index()) : nullptr;
    size_t element_size = flatbuffers::GetTypeSize(element);
    if (object && object->is_struct()) element_size = object->bytesize();
    if (element == reflection::Union || element == reflection::Vector || element_size == 0) {
      return Result::kMalformed;  // not in our schemas
    }
    if (!verifier_.VerifyVectorOrString(vec, element_size)) return Result::kMalformed;
    const auto n = flatbuffers::ReadScalar<flatbuffers::uoffset_t>(vec);
    if (!Charge(sizeof(flatbuffers::uoffset_t) + n * element_size)) return Result::kOverBudget;
    if (element != reflection::String && !(object && !object->is_struct())) return Result::kOk;
    const auto* offsets = reinterpret_cast<const flatbuffers::Vector<flatbuffers::uoffset_t>*>(vec);
    for (flatbuffers::uoffset_t i = 0; i < n; ++i) {
      path_.back().index = i;
      const uint8_t* slot = vec + sizeof(flatbuffers::uoffset_t) + i * sizeof(flatbuffers::uoffset_t);
      const uint8_t* target = slot + offsets->Get(i);
      const Result r = object ? VisitTable(*object, reinterpret_cast<const flatbuffers::Table*>(target))
                              : VisitString(reinterpret_cast<const flatbuffers::String*>(target));
      if (r != Result::kOk) return r;
    }
    return Result::kOk;
  }

  // A field the walk is inside of, and which element if it is a vector's.
  struct Step {
    const reflection::Field* field;
    int64_t index;
  };

  flatbuffers::Verifier verifier_;
  const reflection::Schema& schema_;
  const uint8_t* base_;
  size_t budget_;
  size_t expanded_ = 0;
  std::vector<Step> path_;  // depth is bounded by the verifier's kMaxDepth
  std::string non_utf8_field_;
};

}  // namespace

EnvelopeCheck VerifyEnvelopeWithin(std::span<const uint8_t> bytes, size_t max_expanded) {
  EnvelopeCheck check;
  if (bytes.size() < 8 || bytes.size() >= FLATBUFFERS_MAX_BUFFER_SIZE ||
      !flatbuffers::BufferHasIdentifier(bytes.data(), EnvelopeIdentifier())) {
    return check;
  }
  ExpansionWalk walk(bytes, max_expanded);
  const ExpansionWalk::Result result = walk.Run();
  check.expanded = walk.expanded();
  check.too_large = result == ExpansionWalk::Result::kOverBudget;
  // The generated verifier is the authority on validity; after the walk its
  // work (one visit per reference, like the walk's) is bounded too.
  if (result == ExpansionWalk::Result::kOk) check.envelope = VerifyAs<Envelope>(bytes, EnvelopeIdentifier());
  if (check.envelope) check.non_utf8_field = walk.non_utf8_field();
  return check;
}

std::string NowRfc3339() {
  using namespace std::chrono;
  // Every receipt carries the time: within one millisecond it is the same
  // text, written once per thread.
  thread_local int64_t last_ms = INT64_MIN;
  thread_local std::string last;
  const int64_t now = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  if (now != last_ms) {
    last = Rfc3339(now);
    last_ms = now;
  }
  return last;
}

std::string Rfc3339(int64_t unix_ms) {
  using namespace std::chrono;
  // The date library's calendar, formatted without a stream (a stream per
  // receipt was a visible part of the core's time).
  const date::sys_time<milliseconds> at{milliseconds(unix_ms)};
  const auto day = date::floor<date::days>(at);
  const date::year_month_day ymd{day};
  const date::hh_mm_ss<milliseconds> time{at - day};
  const int year = static_cast<int>(ymd.year());
  if (year < 0 || year > 9999) return date::format("%FT%TZ", at);  // beyond RFC 3339's four digits
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", year,
                              static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                              static_cast<int>(time.hours().count()), static_cast<int>(time.minutes().count()),
                              static_cast<int>(time.seconds().count()),
                              static_cast<int>(time.subseconds().count()));
  return std::string(text, static_cast<size_t>(n));
}

namespace {

// RFC 3339's date-time, read without a stream (a stream per message cost
// the core as much as deciding the policy):
// YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|±HH:MM), T and Z in either case, each
// field in range (no leap second), the calendar date checked by the date
// library; nullopt for anything else.
std::optional<int64_t> ParseCanonicalRfc3339Millis(std::string_view t) {
  using namespace std::chrono;
  auto digits = [&](size_t at, size_t n, int* out) {
    if (at + n > t.size()) return false;
    int v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      v = v * 10 + (t[i] - '0');
    }
    *out = v;
    return true;
  };
  int year, month, day, hour, minute, second;
  if (t.size() < 20 || !digits(0, 4, &year) || t[4] != '-' || !digits(5, 2, &month) || t[7] != '-' ||
      !digits(8, 2, &day) || (t[10] != 'T' && t[10] != 't') || !digits(11, 2, &hour) || t[13] != ':' ||
      !digits(14, 2, &minute) || t[16] != ':' || !digits(17, 2, &second) || hour > 23 || minute > 59 ||
      second > 59) {
    return std::nullopt;
  }
  size_t at = 19;
  int64_t millis = 0;
  if (t[at] == '.') {
    size_t n = 0;
    while (at + 1 + n < t.size() && t[at + 1 + n] >= '0' && t[at + 1 + n] <= '9') {
      if (n < 3) millis = millis * 10 + (t[at + 1 + n] - '0');
      ++n;
    }
    if (n == 0 || n > 9) return std::nullopt;
    for (size_t k = n; k < 3; ++k) millis *= 10;
    at += 1 + n;
  }
  int offset_minutes = 0;
  if (at + 1 == t.size() && (t[at] == 'Z' || t[at] == 'z')) {
    // UTC
  } else if (at + 6 == t.size() && (t[at] == '+' || t[at] == '-')) {
    int oh, om;
    if (!digits(at + 1, 2, &oh) || t[at + 3] != ':' || !digits(at + 4, 2, &om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_minutes = (t[at] == '-' ? -1 : 1) * (oh * 60 + om);
  } else {
    return std::nullopt;
  }
  const date::year_month_day ymd{date::year{year}, date::month{static_cast<unsigned>(month)},
                                 date::day{static_cast<unsigned>(day)}};
  if (!ymd.ok()) return std::nullopt;
  const auto at_time = date::sys_days{ymd} + hours{hour} + minutes{minute} + seconds{second} +
                       milliseconds{millis} - minutes{offset_minutes};
  return duration_cast<milliseconds>(at_time.time_since_epoch()).count();
}

}  // namespace

std::optional<int64_t> ParseRfc3339Millis(std::string_view text) {
  // RFC 3339's date-time, read field by field (ParseCanonicalRfc3339Millis):
  // nothing else is one. date::parse on a stream is not used: besides its
  // cost, a fraction it cannot represent became NaN in its rounding
  // (undefined behaviour, found by make fuzz).
  return ParseCanonicalRfc3339Millis(text);
}

std::string NewMessageId() {
  static const char* kCrockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  using namespace std::chrono;
  uint64_t ms = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  uint8_t random[10];
  // Without randomness two ids could repeat: nothing sensible to do.
  if (!RandomBytes(random, sizeof random)) std::abort();
  // 48-bit time, then 80 random bits: 128 bits as 26 base32 digits.
  uint8_t bytes[16];
  for (int i = 0; i < 6; ++i) bytes[i] = static_cast<uint8_t>(ms >> (8 * (5 - i)));
  std::copy(random, random + 10, bytes + 6);
  std::string out(26, '0');
  // Read 130 bits (2 leading zero bits) five at a time.
  for (int i = 0; i < 26; ++i) {
    int bit = i * 5 - 2;
    int value = 0;
    for (int b = 0; b < 5; ++b, ++bit) {
      value <<= 1;
      if (bit >= 0) value |= (bytes[bit / 8] >> (7 - bit % 8)) & 1;
    }
    out[i] = kCrockford[value];
  }
  return out;
}

bool IsValidMessageId(std::string_view id) {
  if (id.empty() || id.size() > kMaxMessageIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

std::string_view LoggableMessageId(std::string_view id) { return IsValidMessageId(id) ? id : "-"; }

}  // namespace liaison::wire
