// Decide + rewrite of a full ~2 KiB CaseReferral under a 30-field rule pair,
// with 10 and with 10,000 registered agencies. `make bench` runs it.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>

#include "policy/engine.h"
#include "testing/fixtures.h"

namespace liaison::policy {
namespace {

// 30 named fields on each side, with every kind of action.
const char* kReleaseRule = R"(
release:
  - id: referral-release
    to: {kinds: [youth-welfare]}
    messages: [CaseReferral]
    purposes: [referral-for-services]
    consent: [given]
    fields:
      subject.pseudonym: allow
      subject.given_name: allow
      subject.family_name: allow
      subject.aliases: pseudonymize
      subject.date_of_birth: generalize(age-band)
      subject.gender: allow
      subject.national_id: pseudonymize
      subject.phone: mask(last:3)
      subject.email: drop
      subject.address: generalize(sub_county)
      subject.languages: allow
      subject.guardian.name: allow
      subject.guardian.relationship: allow
      subject.guardian.phone: mask(last:4)
      subject.guardian.email: drop
      reason: allow
      indicators: allow
      risk.instrument: allow
      risk.level: allow
      risk.assessed_at: generalize(year)
      risk.summary: allow
      requested_services: allow
      health.fit_for_programme: allow
      health.conditions: drop
      justice.status: allow
      justice.release_date: allow
      counselling_notes: drop
      attachments.name: allow
      attachments.media_type: allow
      attachments.sha256: allow
      others: drop
)";

const char* kAcceptRule = R"(
accept:
  - id: referral-accept
    from: {kinds: [exit-programme]}
    messages: [CaseReferral]
    fields:
      subject.*: allow
      subject.national_id: pseudonymize
      subject.phone: mask(last:2)
      reason: allow
      indicators: allow
      risk.*: allow
      requested_services: allow
      health.fit_for_programme: allow
      health.*: drop
      justice.*: allow
      justice.offences: drop
      counselling_notes: drop
      attachments.*: allow
      attachments.size_bytes: drop
      others: drop
)";

std::string LongText(const std::string& word, size_t bytes) {
  std::string s;
  while (s.size() < bytes) s += word + " ";
  return s;
}

std::vector<uint8_t> Referral() {
  wire::EnvelopeT e;
  e.id = "01JDBENCH000000000000000000";
  e.case_ref = "EXIT-MSA-2026-0042";
  e.purpose = "referral-for-services";
  e.legal_basis = "child-protection";
  e.consent = std::make_unique<wire::ConsentT>();
  e.consent->status = wire::ConsentStatus::given;
  e.created_at = "2026-11-24T09:30:00Z";
  auto r = std::make_unique<wire::RecipientT>();
  r->agency = "agency-1";
  e.to.push_back(std::move(r));
  wire::CaseReferralT c;
  c.subject = std::make_unique<wire::SubjectT>();
  auto& s = *c.subject;
  s.pseudonym = "EXIT-MSA-P-0042";
  s.given_name = "Amani";
  s.family_name = "Example";
  s.aliases = {"Ami Example", "Mwana wa Pwani"};
  s.date_of_birth = "2009-05-14";
  s.gender = wire::Gender::male;
  s.national_id = "00000042";
  s.phone = "+254700000001";
  s.email = "amani.example@example.org";
  s.address = std::make_unique<wire::PostalAddressT>();
  s.address->street = "1 Example Lane";
  s.address->ward = "Likoni";
  s.address->sub_county = "Likoni";
  s.address->county = "Mombasa";
  s.address->country = "Kenya";
  s.languages = {"sw", "en"};
  s.guardian = std::make_unique<wire::GuardianT>();
  s.guardian->name = "Zawadi Example";
  s.guardian->relationship = "mother";
  s.guardian->phone = "+254700000002";
  s.guardian->email = "zawadi.example@example.org";
  c.reason = LongText("wants to leave the group and return to school", 400);
  c.indicators = {"recruiter contact", "online propaganda", "school dropout"};
  c.risk = std::make_unique<wire::RiskAssessmentT>();
  c.risk->instrument = wire::RiskInstrument::vera_2r;
  c.risk->level = wire::RiskLevel::moderate;
  c.risk->assessed_at = "2026-11-20T10:00:00Z";
  c.risk->summary = LongText("moderate risk, protective family factors", 300);
  c.requested_services = {wire::Service::mentoring, wire::Service::education};
  c.health = std::make_unique<wire::HealthT>();
  c.health->conditions = {"condition a"};
  c.health->fit_for_programme = true;
  c.justice = std::make_unique<wire::JusticeT>();
  c.justice->status = wire::JusticeStatus::none;
  c.counselling_notes = LongText("private counselling notes", 500);
  for (int i = 0; i < 2; ++i) {
    auto a = std::make_unique<wire::AttachmentT>();
    a->name = "assessment-" + std::to_string(i) + ".pdf";
    a->media_type = "application/pdf";
    a->sha256 = std::string(64, 'a');
    a->size_bytes = 123456;
    c.attachments.push_back(std::move(a));
  }
  e.payload.Set(c);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

// A policy set of `n` agencies: agency-0 (exit programme) sends to agency-1
// (youth welfare) under the 30-field rules; the others have simple rules.
std::shared_ptr<const PolicySet> MakeSet(int n) {
  static std::map<int, std::shared_ptr<const PolicySet>> cache;
  if (cache.count(n)) return cache[n];
  testing::TempDir dir;
  std::vector<testing::TestAgency> agencies;
  for (int i = 0; i < n; ++i) {
    testing::TestAgency a{"agency-" + std::to_string(i), i % 2 ? "youth-welfare" : "exit-programme",
                          "mombasa", {}, {}};
    a.rules = i == 0 ? kReleaseRule : i == 1 ? kAcceptRule : testing::kAllowEverything;
    agencies.push_back(std::move(a));
  }
  testing::WritePolicies(dir.path().string(), agencies);
  auto set = PolicySet::Load(dir.path().string(), "bench secret");
  if (!set.ok()) {
    std::fprintf(stderr, "%s\n", set.status().ToString().c_str());
    std::abort();
  }
  return cache[n] = *set;
}

void BM_DecideAndRewrite(benchmark::State& state) {
  auto set = MakeSet(static_cast<int>(state.range(0)));
  const std::vector<uint8_t> bytes = Referral();
  const auto& sender = set->For(*set->directory().Find("agency-0"));
  const auto& recipient = set->For(*set->directory().Find("agency-1"));
  flatbuffers::FlatBufferBuilder fbb(4096);
  FieldReport report;
  std::array<Action, kMaxLeaves> actions;
  for (auto _ : state) {
    const wire::Envelope* env = wire::VerifyEnvelope(bytes);
    const MessageFacts facts = ExtractFacts(*env, set->vocabulary());
    const Decision d = Decide(sender, recipient, facts);
    if (!d.allowed()) state.SkipWithError("denied");
    CombinePlans(d, facts.type, actions.data());
    report.Clear();
    Status st = Rewrite(*env, "agency-0", "agency-1", actions.data(), recipient.pseudonym_key, facts,
                        fbb, &report);
    if (!st.ok()) state.SkipWithError("rewrite failed");
    benchmark::DoNotOptimize(fbb.GetBufferPointer());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["input_bytes"] = static_cast<double>(bytes.size());
  state.counters["output_bytes"] = static_cast<double>(fbb.GetSize());
}
BENCHMARK(BM_DecideAndRewrite)->Arg(10)->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace liaison::policy

BENCHMARK_MAIN();
