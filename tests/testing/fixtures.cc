#include "testing/fixtures.h"

#include "liaison/wire.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <unistd.h>

#include <chrono>

#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace liaison::testing {

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto candidate = std::filesystem::temp_directory_path() /
                     ("liaison-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    if (std::filesystem::create_directory(candidate)) {
      path_ = candidate;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteText(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

const char* const kAllowEverything =
    "release:\n"
    "  - id: release-everything\n"
    "    messages: [CaseReferral, ReferralResponse, CaseUpdate, CaseClosure, IncidentReport, "
    "ErasureRequest]\n"
    "    fields: {others: allow}\n"
    "accept:\n"
    "  - id: accept-everything\n"
    "    messages: [CaseReferral, ReferralResponse, CaseUpdate, CaseClosure, IncidentReport, "
    "ErasureRequest]\n"
    "    fields: {others: allow}\n";

void WritePolicies(const std::string& dir, const std::vector<TestAgency>& agencies) {
  WriteText(dir + "/vocabulary.yaml",
            "kinds:\n"
            "  exit-programme: exit programme\n"
            "  youth-welfare: youth welfare\n"
            "  health-service: health service\n"
            "  security-agency: security agency\n"
            "  prison-service: prison service\n"
            "regions:\n"
            "  mombasa: Mombasa County\n"
            "  kwale: Kwale County\n"
            "  nairobi: Nairobi County\n"
            "purposes:\n"
            "  referral-for-services: referral\n"
            "  case-coordination: coordination\n"
            "  imminent-threat: imminent threat\n"
            "legal_bases:\n"
            "  consent: consent\n"
            "  child-protection: child protection\n"
            "  vital-interests: vital interests\n"
            "handling_codes:\n"
            "  H0: purpose only\n"
            "  H1: no court\n"
            "  H2: no onward\n"
            "  H3: other\n");
  for (const auto& a : agencies) {
    WriteText(dir + "/agencies/" + a.id + ".yaml",
              "id: " + a.id + "\nname: Test agency " + a.id + "\nkind: " + a.kind +
                  "\nregion: " + a.region + "\npublic_key: \"" + a.keys.public_z85 + "\"\n" +
                  (a.rules.empty() ? kAllowEverything : a.rules));
  }
}

TestAgency MakeAgency(const std::string& id, const std::string& kind, const std::string& region) {
  auto keys = GenerateCurveKeyPair();
  if (!keys.ok()) throw std::runtime_error(keys.status().ToString());
  return {id, kind, region, *keys};
}

std::vector<uint8_t> CaseMessage(const std::string& id, const std::vector<std::string>& to,
                                 const std::string& case_ref, bool erasure, const std::string& expires_at,
                                 const std::string& notes) {
  wire::EnvelopeT e;
  e.id = id;
  e.case_ref = case_ref;
  e.expires_at = expires_at;
  for (const auto& a : to) {
    e.to.push_back(std::make_unique<wire::RecipientT>());
    e.to.back()->agency = a;
  }
  if (erasure) {
    wire::ErasureRequestT r;
    r.reason = "consent withdrawn";
    e.payload.Set(r);
  } else {
    wire::CaseUpdateT u;
    u.notes = notes;
    e.payload.Set(u);
  }
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::vector<uint8_t> SharedOffsetBalloon(const std::string& id, const std::string& to,
                                         size_t string_bytes, size_t references) {
  flatbuffers::FlatBufferBuilder fbb(string_bytes + references * 4 + 1024);
  auto name = fbb.CreateString(std::string(string_bytes, 'x'));
  auto milestone = wire::CreateMilestone(fbb, name);
  std::vector<flatbuffers::Offset<wire::Milestone>> shared(references, milestone);
  auto update = wire::CreateCaseUpdate(fbb, 0, wire::CaseStatus::MIN, fbb.CreateVector(shared));
  auto recipient = wire::CreateRecipient(fbb, fbb.CreateString(to));
  auto id_offset = fbb.CreateString(id);
  auto case_ref = fbb.CreateString("CASE-BALLOON");
  auto recipients = fbb.CreateVector(&recipient, 1);
  wire::EnvelopeBuilder envelope(fbb);
  envelope.add_id(id_offset);
  envelope.add_case_ref(case_ref);
  envelope.add_to(recipients);
  envelope.add_schema_version(1);
  envelope.add_payload_type(wire::Payload::CaseUpdate);
  envelope.add_payload(update.Union());
  wire::FinishEnvelopeBuffer(fbb, envelope.Finish());
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::pair<int, std::string> HttpGet(const std::string& endpoint, const std::string& target) {
  namespace http = boost::beast::http;
  try {
    boost::asio::io_context io;
    boost::beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(30));
    const auto colon = endpoint.rfind(':');
    stream.connect({boost::asio::ip::make_address(endpoint.substr(0, colon)),
                    static_cast<unsigned short>(std::stoi(endpoint.substr(colon + 1)))});
    http::request<http::empty_body> request(http::verb::get, target, 11);
    request.set(http::field::host, endpoint);
    http::write(stream, request);
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    return {static_cast<int>(response.result_int()), response.body()};
  } catch (const std::exception& e) {
    return {0, e.what()};
  }
}

}  // namespace liaison::testing
