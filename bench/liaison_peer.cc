#include "liaison_peer.h"

#include <cstdio>
#include <filesystem>

namespace liaison::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSender = "exit-mombasa";
constexpr const char* kReceiver = "youth-welfare-mombasa";
constexpr size_t kIdDigits = 14;

// Abuse limits off: one trusted sender pushing as hard as it can is the
// point of a capacity measurement (production keeps the defaults).
constexpr const char* kBenchConfig =
    "limits:\n"
    "  rate_per_agency: 0\n"
    "  max_in_flight_per_agency: 0\n";

// The sender's matching rule for another region: evaluated for every
// referral to youth welfare, refused on the region.
std::string ExtraRule(size_t i) {
  return "  - id: bench-rule-" + std::to_string(i) +
         "\n"
         "    to:\n"
         "      kinds: [youth-welfare]\n"
         "      regions: [kwale]\n"
         "    messages: [CaseReferral]\n"
         "    purposes: [referral-for-services, case-coordination]\n"
         "    legal_bases: [child-protection, consent]\n"
         "    consent: [given]\n"
         "    fields:\n"
         "      subject.pseudonym: allow\n"
         "      subject.national_id: pseudonymize\n"
         "      reason: allow\n"
         "      others: drop\n";
}

// Replaces the line starting with `key:` (text, not a regex replacement:
// Z85 keys hold '$' and '&').
std::string WithLine(std::string text, const std::string& key, const std::string& line) {
  const size_t at = text.find("\n" + key);  // agency files start with comments
  if (at == std::string::npos) return text;
  const size_t start = at + 1, end = text.find('\n', start);
  return text.replace(start, end == std::string::npos ? std::string::npos : end - start, line);
}

std::string WithKey(const std::string& text, const std::string& public_z85) {
  return WithLine(text, "public_key:", "public_key: \"" + public_z85 + "\"");
}

std::string MessageId(uint64_t seq) {
  char id[32];
  std::snprintf(id, sizeof id, "bench-%0*llu", static_cast<int>(kIdDigits),
                static_cast<unsigned long long>(seq));
  return id;
}

class Sender : public SenderClient {
 public:
  Sender(std::unique_ptr<Agent> agent, std::vector<uint8_t> referral, size_t id_offset)
      : agent_(std::move(agent)), referral_(std::move(referral)), id_offset_(id_offset) {}

  Status Post(uint64_t seq) override {
    // The envelope is built once; each message only rewrites the digits of
    // its fixed-width id in place (building it anew would cost the client
    // more than some of the systems it measures).
    const std::string id = MessageId(seq);
    std::copy(id.begin(), id.end(), referral_.begin() + static_cast<ptrdiff_t>(id_offset_));
    return agent_->SendFrames(wire::kSend, referral_);
  }

  StatusOr<uint64_t> Confirmed(std::chrono::milliseconds wait) override {
    uint64_t n = 0;
    while (true) {
      auto receipt = agent_->TakeReceipt(n == 0 ? wait : std::chrono::milliseconds(0));
      if (!receipt.ok()) return receipt.status();
      if (!receipt->has_value()) return n;
      const wire::Receipt* r = (*receipt)->get();
      const wire::Code code = r->recipients() && r->recipients()->size() == 1
                                  ? r->recipients()->Get(0)->code()
                                  : r->code();
      if (code != wire::Code::stored) {
        return Status::Internal(std::string("receipt ") + wire::EnumNameCode(code) + " for " +
                                (r->message_id() ? r->message_id()->str() : std::string("?")));
      }
      ++n;
    }
  }

 private:
  std::unique_ptr<Agent> agent_;
  std::vector<uint8_t> referral_;
  size_t id_offset_;
};

class Receiver : public ReceiverClient {
 public:
  explicit Receiver(std::unique_ptr<Agent> agent) : agent_(std::move(agent)) {}
  StatusOr<std::optional<uint64_t>> Receive(std::chrono::milliseconds wait) override {
    auto m = agent_->Receive(wait);
    if (!m.ok()) return m.status();
    if (!m->has_value()) return std::optional<uint64_t>();
    const std::string_view id = (**m)->id()->string_view();
    LIAISON_RETURN_IF_ERROR(agent_->Ack(id));
    if (id.size() != 6 + kIdDigits) return Status::Internal("unexpected message id");
    return std::optional<uint64_t>(std::stoull(std::string(id.substr(6))));
  }

 private:
  std::unique_ptr<Agent> agent_;
};

}  // namespace

StatusOr<std::unique_ptr<LiaisonBroker>> LiaisonBroker::Start(const LiaisonSetup& setup) {
  std::unique_ptr<LiaisonBroker> b(new LiaisonBroker());
  b->broker_ = std::make_unique<testing::BrokerProcess>(b->dir_, std::vector<testing::TestAgency>{},
                                                        kBenchConfig,
                                                        /*production_defaults=*/true, setup.store_settings);
  const std::string dir = b->broker_->policies_dir();
  {
    // The receiver may hold as many unacked deliveries as RabbitMQ's
    // consumer (prefetch 256 in compare_bench.cc) and the sender's window.
    const std::string config = (fs::path(dir).parent_path() / "broker.yaml").string();
    std::string text = testing::ReadText(config);
    const size_t at = text.find("\nstore:\n");
    if (at == std::string::npos) return Status::Internal("bench: no store section in " + config);
    text.insert(at + 8, "  delivery_window: 256\n");
    testing::WriteText(config, text);
  }
  fs::remove_all(dir);
  fs::create_directories(dir + "/agencies");
  fs::copy_file(setup.policies_source + "/vocabulary.yaml", dir + "/vocabulary.yaml");
  // Writes a copy of an example agency's file under a new id and key.
  auto write_copy = [&dir](const std::string& text, const std::string& id) -> StatusOr<testing::TestAgency> {
    auto keys = GenerateCurveKeyPair();
    if (!keys.ok()) return keys.status();
    testing::WriteText(dir + "/agencies/" + id + ".yaml", WithKey(WithLine(text, "id:", "id: " + id), keys->public_z85));
    return testing::TestAgency{id, "", "", *keys};
  };
  for (const auto& entry : fs::directory_iterator(setup.policies_source + "/agencies")) {
    const std::string id = entry.path().stem().string();
    auto keys = GenerateCurveKeyPair();
    if (!keys.ok()) return keys.status();
    std::string text = WithKey(testing::ReadText(entry.path().string()), keys->public_z85);
    if (id == kSender) {
      if (setup.pairs == 0) b->senders_.push_back({id, "", "", *keys});
      std::string rules;
      for (size_t i = 0; i < setup.extra_rules; ++i) rules += ExtraRule(i);
      const size_t at = text.find("\nrelease:\n");
      if (at == std::string::npos) return Status::InvalidArgument(id + ": no release rules");
      text.insert(at + 10, rules);
      for (size_t i = 0; i < setup.pairs; ++i) {
        auto sender = write_copy(text, "bench-sender-" + std::to_string(i));
        if (!sender.ok()) return sender.status();
        b->senders_.push_back(*sender);
      }
    }
    if (id == kReceiver) {
      if (setup.pairs == 0) b->receivers_.push_back({id, "", "", *keys});
      for (size_t i = 0; i < setup.extra_agencies; ++i) {
        auto extra = write_copy(text, "bench-agency-" + std::to_string(i));
        if (!extra.ok()) return extra.status();
      }
      for (size_t i = 0; i < setup.pairs; ++i) {
        auto receiver = write_copy(text, "bench-receiver-" + std::to_string(i));
        if (!receiver.ok()) return receiver.status();
        b->receivers_.push_back(*receiver);
      }
    }
    testing::WriteText(dir + "/agencies/" + id + ".yaml", text);
  }
  if (b->senders_.empty() || b->receivers_.empty()) {
    return Status::NotFound(setup.policies_source + "/agencies has no " + kSender + " or " + kReceiver);
  }
  // Loading takes about a millisecond an agency on the bench machine
  // (10,000 agencies: about 10 s, the tests' usual limit).
  b->broker_->set_ready_timeout(std::chrono::seconds(10) +
                                std::chrono::milliseconds(5) * (setup.extra_agencies + 2 * setup.pairs));
  LIAISON_RETURN_IF_ERROR(b->broker_->Start());
  return b;
}

LiaisonBroker::~LiaisonBroker() { Stop(); }

void LiaisonBroker::Stop() {
  if (broker_ && broker_->running()) broker_->Stop(SIGTERM);
}

AgentOptions LiaisonBroker::SenderOptions(size_t pair) const {
  AgentOptions o = broker_->AgentFor(senders_.at(pair), wire::Role::sender);
  o.heartbeat = std::chrono::milliseconds(1000);
  return o;
}

AgentOptions LiaisonBroker::ReceiverOptions(size_t pair) const {
  AgentOptions o = broker_->AgentFor(receivers_.at(pair), wire::Role::receiver);
  o.heartbeat = std::chrono::milliseconds(1000);
  return o;
}

StatusOr<std::vector<uint8_t>> ReferralOfSize(const std::string& policies_source, size_t size,
                                              const std::string& receiver) {
  const std::string path = policies_source + "/tests/messages/01-exit-to-youth-welfare.json";
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto bytes = codec.ToBinary(testing::ReadText(path), path);
  if (!bytes.ok()) return bytes.status();
  wire::EnvelopeT e;
  wire::GetEnvelope(bytes->data())->UnPackTo(&e);
  e.id = MessageId(0);
  e.to.clear();
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = receiver;
  wire::CaseReferralT* referral = e.payload.AsCaseReferral();
  if (referral == nullptr) return Status::InvalidArgument(path + ": not a CaseReferral");
  std::vector<uint8_t> out;
  for (int attempt = 0; attempt < 3; ++attempt) {
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
    out.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    if (out.size() >= size) break;
    referral->counselling_notes += std::string(size - out.size(), 'n');
  }
  return out;
}

StatusOr<std::unique_ptr<SenderClient>> ConnectLiaisonSender(const LiaisonBroker& broker, size_t pair,
                                                             std::vector<uint8_t> referral) {
  const wire::Envelope* e = wire::VerifyEnvelope(referral);
  if (e == nullptr || !e->id() || e->id()->size() != 6 + kIdDigits) {
    return Status::InvalidArgument("the bench referral has no fixed-width id");
  }
  const size_t id_offset = static_cast<size_t>(e->id()->data() - reinterpret_cast<const char*>(referral.data()));
  if (pair >= broker.pairs()) return Status::InvalidArgument("no sender pair " + std::to_string(pair));
  auto agent = Agent::Connect(broker.SenderOptions(pair));
  if (!agent.ok()) return agent.status();
  LIAISON_RETURN_IF_ERROR((*agent)->WaitReady(std::chrono::milliseconds(5000)));
  return std::unique_ptr<SenderClient>(new Sender(std::move(*agent), std::move(referral), id_offset));
}

StatusOr<std::unique_ptr<ReceiverClient>> ConnectLiaisonReceiver(const LiaisonBroker& broker, size_t pair) {
  if (pair >= broker.pairs()) return Status::InvalidArgument("no receiver pair " + std::to_string(pair));
  auto agent = Agent::Connect(broker.ReceiverOptions(pair));
  if (!agent.ok()) return agent.status();
  LIAISON_RETURN_IF_ERROR((*agent)->WaitReady(std::chrono::milliseconds(5000)));
  return std::unique_ptr<ReceiverClient>(new Receiver(std::move(*agent)));
}

}  // namespace liaison::bench
