// `liaison policy explain --json` against the real broker (issue 14, point 5):
// for every message of policies/tests/messages and a generated corpus (every
// action on every field type, edge values), the decision, the fields and
// their values that explain prints equal what the broker tells the sender and
// delivers to a real recipient agent, field by field. One broker, many
// messages.
#include <gtest/gtest.h>

#include <regex>

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "explain/explain.h"
#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

const std::string kSource = LIAISON_SOURCE_DIR;

// The sender of each shipped message (policies/tests/messages/NN-*.json).
const std::map<std::string, std::string> kShippedSenders = {
    {"01", "exit-mombasa"}, {"02", "exit-mombasa"},     {"03", "health-mombasa"},
    {"04", "prison-shimo"}, {"05", "community-likoni"}, {"06", "exit-mombasa"}};

// Field maps of generated rules: every action, on groups and single fields
// of every type (text, list, date, date of birth, address, code, yes/no,
// number, header text).
const std::map<std::string, std::string> kProfiles = {
    {"allow", "'*': allow"},
    {"drop", "'*': drop"},
    {"unnamed", "reason: allow"},
    {"others", "others: allow"},
    {"pseudonymize", "'*': pseudonymize"},
    {"mask1", "'*': mask(last:1)"},
    {"mask4", "'*': mask(last:4)"},
    {"year", "'*': generalize(year)"},
    {"age-band", "subject.date_of_birth: generalize(age-band)\n      others: allow"},
    {"county",
     "subject.address: generalize(county)\n      location: generalize(county)\n      others: allow"},
    {"sub-county",
     "subject.address: generalize(sub_county)\n      location: generalize(sub_county)\n"
     "      others: allow"},
    {"header", "header: allow\n      subject.given_name: allow"},
    {"fields",
     "subject.national_id: mask(last:3)\n      subject.given_name: pseudonymize\n"
     "      subject.aliases: pseudonymize\n      subject.date_of_birth: generalize(year)\n"
     "      subject.gender: allow\n      health.fit_for_programme: allow\n"
     "      requested_services: allow\n      attachments.size_bytes: allow\n"
     "      risk.assessed_at: generalize(year)\n      justice.release_date: generalize(year)\n"
     "      milestones.reached_at: generalize(year)\n      occurred_at: generalize(year)\n"
     "      header.consent.scope: pseudonymize\n      header.handling_restrictions: mask(last:5)\n"
     "      header.break_glass: allow\n      others: drop"},
};

// (release profile, accept profile) per generated recipient: each profile
// on the release side against allow, the stricter ones on the accept side,
// and pairs whose actions differ.
std::vector<std::pair<std::string, std::string>> Pairs() {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& [name, fields] : kProfiles) pairs.push_back({name, "allow"});
  for (const char* name : {"drop", "unnamed", "pseudonymize", "mask4", "year", "header", "fields"}) {
    pairs.push_back({"allow", name});
  }
  for (auto p : std::vector<std::pair<std::string, std::string>>{
           {"mask4", "year"}, {"year", "mask4"}, {"pseudonymize", "mask1"}, {"age-band", "year"},
           {"county", "sub-county"}, {"header", "fields"}, {"others", "unnamed"}}) {
    pairs.push_back(p);
  }
  return pairs;
}

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c == '\t') {
      out += "\\t";
      continue;
    }
    out.push_back(c);
  }
  return out + "\"";
}

// Generated messages: edge values (empty, whitespace, short, unreadable
// dates, unicode, long) in every kind of field, in every payload type.
std::vector<std::string> GeneratedPayloads() {
  const std::string long_text(3000, 'x');
  const std::string unicode = "Ämäni wa Pwani 😀 مرحبا";
  auto referral = [&](const std::string& text, const std::string& dob, const std::string& date,
                      const std::string& name) {
    return R"("payload_type": "CaseReferral", "payload": {"subject": {"pseudonym": )" + Quote(text) +
           R"(, "given_name": )" + Quote(name) + R"(, "family_name": )" + Quote(text) +
           R"(, "aliases": [)" + Quote(name) + ", " + Quote(text) + ", " + Quote(unicode) +
           R"(], "date_of_birth": )" + Quote(dob) + R"(, "gender": "female", "national_id": )" +
           Quote(name) + R"(, "address": {"street": )" + Quote(text) + R"(, "ward": )" +
           Quote(unicode) + R"(, "sub_county": "Likoni", "county": "Mombasa", "country": )" +
           Quote(text) + R"(}, "guardian": {"name": )" + Quote(name) + R"(}},
        "reason": )" + Quote(long_text) + R"(, "indicators": [], "risk": {"level": "high",
        "assessed_at": )" + Quote(date) + R"(, "summary": )" + Quote(unicode) + R"(},
        "requested_services": ["mentoring", "housing"], "health": {"fit_for_programme": true,
        "conditions": [)" + Quote(text) + R"(]}, "justice": {"status": "returnee", "release_date": )" +
           Quote(date) + R"(}, "counselling_notes": )" + Quote(text) + R"(,
        "attachments": [{"name": )" + Quote(name) + R"(, "size_bytes": 48213}, {"sha256": "ff"}]})";
  };
  return {
      referral("", "14/05/2009", "2026-13-45", "A"),
      referral(" ", "2009-05-14", "2026-11-24T08:45:00Z", "1234"),
      referral("\t", "2009-02-30", "", unicode),
      referral(unicode, "", "soon", long_text),
      referral("Amani", "2010-11-24", "2026-11-24", "AB"),
      R"("payload_type": "IncidentReport", "payload": {"occurred_at": "yesterday",
        "location": {"street": "", "ward": " ", "sub_county": "Likoni", "county": "Mombasa"},
        "description": )" + Quote(unicode) + R"(, "reporter": {"name": "", "phone": "1"}})",
      R"("payload_type": "CaseUpdate", "payload": {"status": "in_progress", "notes": "",
        "milestones": [{"name": "intake", "reached_at": "2026-10-01"},
                       {"name": " ", "reached_at": "1 Oct"}], "risk": {"assessed_at": ""}})",
      R"("payload_type": "ReferralResponse", "payload": {"decision": "accepted", "reason": " ",
        "assigned_contact": {"name": )" + Quote(unicode) + R"(},
        "health": {"fit_for_programme": false, "medications": ["", "m"]}})",
  };
}

// A generated message to `to`, as JSON; `header` holds header fields.
std::string Generated(const std::string& id, const std::string& to, const std::string& payload,
                      size_t variant) {
  const std::vector<std::string> texts = {"", " ", "Approved by the duty manager 😀",
                                          std::string(2000, 'y')};
  const std::string text = texts[variant % texts.size()];
  return R"({"id": )" + Quote(id) + R"(, "to": [{"agency": )" + Quote(to) +
         R"(}], "case_ref": "GEN-1", "purpose": "referral-for-services", "legal_basis": "consent",
    "consent": {"status": "given", "recorded_at": "2026-11-20T10:00:00Z", "scope": )" +
         Quote(text) + R"(}, "handling": "H3", "handling_restrictions": )" +
         Quote(texts[(variant + 1) % texts.size()]) +
         R"(, "urgency": "green", "created_at": "2026-11-24T09:30:00+03:00", "break_glass": )" +
         Quote(texts[(variant + 2) % texts.size()]) + ", " + payload + "}";
}

class ExplainDifferentialTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_ = std::make_unique<BrokerProcess>(dir_, std::vector<TestAgency>{});
    fs::remove_all(broker_->policies_dir());
    fs::create_directories(broker_->policies_dir() + "/agencies");
    fs::copy_file(kSource + "/policies/vocabulary.yaml", broker_->policies_dir() + "/vocabulary.yaml");
    for (const auto& entry : fs::directory_iterator(kSource + "/policies/agencies")) {
      const std::string id = entry.path().stem().string();
      agencies_[id] = MakeAgency(id, "", "");
      shipped_.push_back(id);
      std::string text = ReadText(entry.path().string());
      const std::string placeholder = "public_key: \"\"";
      text.replace(text.find(placeholder), placeholder.size(),
                   "public_key: \"" + agencies_[id].keys.public_z85 + "\"");
      WriteText(broker_->policies_dir() + "/agencies/" + id + ".yaml", text);
    }
    WriteGeneratedAgencies();
    Status st = broker_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
  }

  void WriteGeneratedAgencies() {
    const std::string types =
        "[CaseReferral, ReferralResponse, CaseUpdate, CaseClosure, IncidentReport, ErasureRequest]";
    std::string release = "release:\n";
    const auto pairs = Pairs();
    for (size_t k = 0; k < pairs.size(); ++k) {
      const std::string id = "diff-r" + std::to_string(k);
      generated_.push_back(id);
      release += "  - id: to-" + id + "\n    to:\n      agencies: [" + id + "]\n    messages: " +
                 types + "\n    fields:\n      " + kProfiles.at(pairs[k].first) + "\n";
      TestAgency r = MakeAgency(id, "youth-welfare", "mombasa");
      r.rules = "accept:\n  - id: from-sender\n    from:\n      agencies: [diff-sender]\n"
                "    messages: " + types + "\n    fields:\n      " + kProfiles.at(pairs[k].second) + "\n";
      agencies_[id] = r;
    }
    TestAgency sender = MakeAgency("diff-sender", "exit-programme", "mombasa");
    sender.rules = release;
    agencies_["diff-sender"] = sender;
    std::vector<TestAgency> extra = {sender};
    for (const auto& id : generated_) extra.push_back(agencies_[id]);
    // WritePolicies writes a vocabulary too: keep the shipped one.
    TempDir scratch;
    WritePolicies(scratch.path().string(), extra);
    for (const auto& a : extra) {
      fs::copy_file(scratch.file("agencies/" + a.id + ".yaml"),
                    broker_->policies_dir() + "/agencies/" + a.id + ".yaml");
    }
  }

  Agent& AgentOf(const std::string& id, wire::Role role) {
    auto& slot = role == wire::Role::receiver ? receivers_[id] : senders_[id];
    if (!slot) {
      auto agent = Agent::Connect(broker_->AgentFor(agencies_.at(id), role));
      if (!agent.ok()) throw std::runtime_error(agent.status().ToString());
      slot = std::move(*agent);
      if (role == wire::Role::receiver) {
        EXPECT_TRUE(slot->WaitReady(5000ms).ok()) << id;
      }
    }
    return *slot;
  }

  // Sends `json` from `from` to `to` through the broker, runs explain on the
  // same message, and compares them field by field.
  void Compare(const std::string& from, const std::string& to, const std::string& json) {
    SCOPED_TRACE(from + " -> " + to + ": " + json.substr(0, 300));
    ++compared_;
    wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
    auto bytes = codec.ToBinary(json, "generated");
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    Agent& receiver = AgentOf(to, wire::Role::receiver);
    auto receipt = AgentOf(from, wire::Role::sender).Send(*bytes);
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();

    const std::string file = dir_.file("message.json");
    WriteText(file, json);
    std::string out, err;
    const int rc = RunCommand({LIAISON_CLI_BIN, "policy", "explain", "--json", "--policies",
                               broker_->policies_dir(), "--pseudonym-key",
                               broker_->pseudonym_key_path(), "--from", from, "--to", to, file},
                              &out, &err);
    ASSERT_EQ(0, rc) << err;
    ASSERT_FALSE(out.empty());
    EXPECT_EQ('\n', out.back()) << "explain's JSON must end with a newline";
    auto parsed = wire::JsonCodec(wire::JsonCodec::Root::kPolicyExplanation).ToBinary(out, "explain");
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString() << "\n" << out;
    const auto* e = flatbuffers::GetRoot<explain::Explanation>(parsed->data());

    if ((*receipt)->code() != wire::Code::ok) {
      ++rejected_;
      EXPECT_EQ("rejected", e->decision()->str());
      EXPECT_EQ(wire::EnumNameCode((*receipt)->code()), e->code()->str());
      return;
    }
    // An erasure also goes to agencies that received the case before: find `to`.
    const wire::RecipientReceipt* r = nullptr;
    for (const auto* entry : *(*receipt)->recipients()) {
      if (entry->recipient()->str() == to) r = entry;
    }
    ASSERT_NE(nullptr, r);
    EXPECT_EQ(wire::EnumNameCode(r->code()), e->code()->str());
    std::vector<std::string> rules;
    if (e->release_rule()) rules.push_back(e->release_rule()->rule()->str());
    if (e->accept_rule()) rules.push_back(e->accept_rule()->rule()->str());
    std::vector<std::string> broker_rules;
    if (r->rules()) {
      for (const auto* s : *r->rules()) broker_rules.push_back(s->str());
    }
    EXPECT_EQ(broker_rules, rules);
    EXPECT_EQ(r->break_glass(), e->break_glass());
    if (r->code() != wire::Code::stored) {
      ++denied_;
      EXPECT_EQ("denied", e->decision()->str());
      EXPECT_EQ(r->reason() ? r->reason()->str() : "", e->reason() ? e->reason()->str() : "");
      EXPECT_EQ(nullptr, e->received());
      return;
    }
    ++released_;
    auto delivered = Delivery(receiver, (*receipt)->message_id()->str());
    ASSERT_TRUE(delivered.has_value()) << "no delivery to " << to;
    ASSERT_EQ("released", e->decision()->str());
    ASSERT_NE(nullptr, e->received());
    CompareFields(*e, *r, delivered->get(), delivered->bytes());
  }

  // The delivery of message `id`, acked; others (erasures forwarded to
  // earlier recipients of a case) are acked and skipped.
  std::optional<EnvelopeBuffer> Delivery(Agent& receiver, const std::string& id) {
    for (int i = 0; i < 10; ++i) {
      auto m = receiver.Receive(5000ms);
      if (!m.ok() || !m->has_value()) return std::nullopt;
      const std::string got = (**m)->id()->str();
      EXPECT_TRUE(receiver.Ack(got).ok());
      if (got == id) return std::move(**m);
    }
    return std::nullopt;
  }

  // The recipient's copy in explain equals the delivered one; each field's
  // values are those delivered, and its action is what the receipt says.
  void CompareFields(const explain::Explanation& e, const wire::RecipientReceipt& r,
                     const wire::Envelope* delivered, std::span<const uint8_t> delivered_bytes) {
    wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
    flatbuffers::FlatBufferBuilder fbb;
    const reflection::Schema& schema = wire::EnvelopeSchema();
    fbb.Finish(flatbuffers::CopyTable(fbb, schema, *schema.root_table(),
                                      *reinterpret_cast<const flatbuffers::Table*>(e.received())),
               "LSNE");
    auto explained_json = codec.ToJson({fbb.GetBufferPointer(), fbb.GetSize()}, true);
    auto delivered_json = codec.ToJson(delivered_bytes, true);
    ASSERT_TRUE(explained_json.ok() && delivered_json.ok());
    // Each copy gets its own random thread reference (explain's simulated
    // one too): everything else is the same.
    const std::regex thread(",\\s*\"thread\": \"[0-9a-f]{32}\"");
    EXPECT_EQ(std::regex_replace(*delivered_json, thread, ""), std::regex_replace(*explained_json, thread, ""));

    const policy::PayloadLayout& layout = *policy::SchemaLayout::Get().For(delivered->payload_type());
    const auto values = policy::LeafValues(layout, *delivered);
    std::set<std::string> explained;
    auto listed = [](const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* names,
                     const std::string& path) {
      if (!names) return false;
      for (const auto* n : *names) {
        if (n->str() == path) return true;
      }
      return false;
    };
    for (const auto* f : *e.fields()) {
      const std::string path = f->path()->str();
      explained.insert(path);
      size_t leaf = 0;
      while (leaf < layout.leaves.size() && layout.leaves[leaf].path != path) ++leaf;
      ASSERT_LT(leaf, layout.leaves.size()) << path;
      std::vector<std::string> shown;
      if (f->values()) {
        for (const auto* v : *f->values()) shown.push_back(v->str());
      }
      EXPECT_EQ(values[leaf], shown) << path;
      const std::string action = f->action()->str();
      if (action == "drop") {
        EXPECT_TRUE(values[leaf].empty()) << path;
        EXPECT_TRUE(listed(r.dropped(), path)) << path << " is not dropped by the broker";
      } else if (action == "allow") {
        EXPECT_TRUE(listed(r.released(), path)) << path << " is not released by the broker";
      } else {
        EXPECT_TRUE(listed(r.transformed(), path)) << path << " is not transformed by the broker";
      }
      ASSERT_NE(nullptr, f->release()) << path;
      ASSERT_NE(nullptr, f->accept()) << path;
      EXPECT_NE(nullptr, f->release()->at()) << path;
      EXPECT_NE(nullptr, f->accept()->at()) << path;
    }
    // Every field the recipient has, and every field the receipt names, is explained.
    for (size_t i = 0; i < layout.leaves.size(); ++i) {
      const std::string& path = layout.leaves[i].path;
      if (!values[i].empty()) {
        EXPECT_TRUE(explained.count(path)) << path << " delivered, not explained";
      }
      if (listed(r.released(), path) || listed(r.transformed(), path) || listed(r.dropped(), path)) {
        EXPECT_TRUE(explained.count(path)) << path << " in the receipt, not explained";
      }
    }
  }

  TempDir dir_;
  std::map<std::string, TestAgency> agencies_;
  std::vector<std::string> shipped_, generated_;
  std::unique_ptr<BrokerProcess> broker_;
  std::map<std::string, std::unique_ptr<Agent>> senders_, receivers_;
  size_t compared_ = 0, released_ = 0, denied_ = 0, rejected_ = 0;
};

TEST_F(ExplainDifferentialTest, ExplainPrintsWhatTheBrokerDelivers) {
  // Every shipped message, from its sender to every other shipped agency.
  size_t messages = 0;
  for (const auto& entry : fs::directory_iterator(kSource + "/policies/tests/messages")) {
    if (entry.path().extension() != ".json") continue;
    const std::string name = entry.path().filename().string();
    auto sender = kShippedSenders.find(name.substr(0, 2));
    ASSERT_NE(kShippedSenders.end(), sender) << name << ": add its sender to kShippedSenders";
    ++messages;
    wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
    auto bytes = codec.ToBinary(ReadText(entry.path().string()), name);
    ASSERT_TRUE(bytes.ok());
    for (const std::string& to : shipped_) {
      if (to == sender->second) continue;
      // The file as written, with an id and the one recipient added.
      std::string json = ReadText(entry.path().string());
      json.insert(json.find('{') + 1,
                  "\"id\": \"" + name.substr(0, 2) + "-" + to + "\", \"to\": [{\"agency\": \"" + to + "\"}],");
      Compare(sender->second, to, json);
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_EQ(6u, messages);

  // The generated corpus: each message to every other generated recipient
  // (so that each rule pair meets several messages and the test stays fast).
  const auto payloads = GeneratedPayloads();
  for (size_t m = 0; m < payloads.size(); ++m) {
    for (size_t k = m % 2; k < generated_.size(); k += 2) {
      const std::string id = "g" + std::to_string(m) + "-" + std::to_string(k);
      Compare("diff-sender", generated_[k], Generated(id, generated_[k], payloads[m], m + k));
      if (HasFatalFailure()) return;
    }
  }

  // Messages the broker rejects as a whole: explain says so, with its code.
  const std::string payload = payloads[4];
  std::string bad_purpose = Generated("r1", "diff-r0", payload, 0);
  bad_purpose.replace(bad_purpose.find("referral-for-services"), 21, "no-such-purpose");
  Compare("diff-sender", "diff-r0", bad_purpose);
  std::string bad_time = Generated("r2", "diff-r0", payload, 0);
  bad_time.replace(bad_time.find("2026-11-24T09:30:00+03:00"), 25, "24 November 2026");
  Compare("diff-sender", "diff-r0", bad_time);
  std::string spoofed = Generated("r3", "diff-r0", payload, 0);
  spoofed.insert(1, R"("from": "exit-mombasa", )");
  Compare("diff-sender", "diff-r0", spoofed);

  std::printf("compared %zu messages: %zu released, %zu denied, %zu rejected\n", compared_,
              released_, denied_, rejected_);
  EXPECT_GT(released_, compared_ / 2);
  EXPECT_GT(denied_, 10u);
  EXPECT_EQ(3u, rejected_);
}

}  // namespace
}  // namespace liaison::testing
