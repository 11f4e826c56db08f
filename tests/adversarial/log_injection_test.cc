// Attacks on "operators' logs are the broker's own" (docs/security.md):
// a client-chosen string (Hello.agent) must not forge log lines, flood the
// log rotation, or break out of its field in JSON logs.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::vector<uint8_t> Envelope(const std::string& id, const std::string& to) {
  wire::EnvelopeT e;
  e.id = id;
  e.to.push_back(std::make_unique<wire::RecipientT>());
  e.to.back()->agency = to;
  e.payload.Set(wire::CaseClosureT());
  flatbuffers::FlatBufferBuilder fbb;
  wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A strict RFC 8259 reader for one log line: the line must be exactly one
// JSON object (no duplicate top-level keys, valid UTF-8, no raw control
// characters); its top-level string members are returned.
class StrictJsonLine {
 public:
  explicit StrictJsonLine(std::string_view text) : t_(text) {}

  std::optional<std::map<std::string, std::string>> Object() {
    std::map<std::string, std::string> fields;
    Space();
    if (!Eat('{')) return std::nullopt;
    Space();
    if (!Eat('}')) {
      do {
        Space();
        std::string key, value;
        bool is_string = false;
        if (!String(&key)) return std::nullopt;
        Space();
        if (!Eat(':') || !Value(&value, &is_string)) return std::nullopt;
        if (fields.count(key)) return std::nullopt;  // a field said twice
        fields[key] = is_string ? value : "";
        Space();
      } while (Eat(','));
      if (!Eat('}')) return std::nullopt;
    }
    Space();
    if (i_ != t_.size()) return std::nullopt;
    return fields;
  }

 private:
  bool Eat(char c) {
    if (i_ < t_.size() && t_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void Space() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r')) ++i_;
  }
  bool Value(std::string* out, bool* is_string) {
    Space();
    if (i_ >= t_.size()) return false;
    const char c = t_[i_];
    if (c == '"') return *is_string = true, String(out);
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i_;
      Space();
      if (Eat(close)) return true;
      do {
        std::string ignored;
        bool s = false;
        if (c == '{') {
          Space();
          if (!String(&ignored)) return false;
          Space();
          if (!Eat(':')) return false;
        }
        if (!Value(&ignored, &s)) return false;
        Space();
      } while (Eat(','));
      return Eat(close);
    }
    for (std::string_view word : {"true", "false", "null"}) {
      if (t_.substr(i_, word.size()) == word) return i_ += word.size(), true;
    }
    return Number();
  }
  bool Number() {
    const std::regex number(R"(^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?)");
    std::match_results<std::string_view::const_iterator> m;
    if (!std::regex_search(t_.begin() + i_, t_.end(), m, number) || m.length(0) == 0) return false;
    i_ += m.length(0);
    return true;
  }
  bool String(std::string* out) {
    if (!Eat('"')) return false;
    while (i_ < t_.size()) {
      const auto c = static_cast<unsigned char>(t_[i_]);
      if (c == '"') return ++i_, true;
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++i_ >= t_.size()) return false;
        const char e = t_[i_++];
        static const std::map<char, char> kSimple = {{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {'b', '\b'},
                                                     {'f', '\f'}, {'n', '\n'}, {'r', '\r'}, {'t', '\t'}};
        if (auto it = kSimple.find(e); it != kSimple.end()) {
          out->push_back(it->second);
        } else if (e == 'u' && i_ + 4 <= t_.size() &&
                   std::all_of(t_.begin() + i_, t_.begin() + i_ + 4, [](char h) { return std::isxdigit(h); })) {
          const unsigned code = std::stoul(std::string(t_.substr(i_, 4)), nullptr, 16);
          i_ += 4;
          if (code < 0x80) {
            out->push_back(static_cast<char>(code));
          } else if (code < 0x800) {
            out->push_back(static_cast<char>(0xc0 | (code >> 6)));
            out->push_back(static_cast<char>(0x80 | (code & 0x3f)));
          } else {
            out->push_back(static_cast<char>(0xe0 | (code >> 12)));
            out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3f)));
            out->push_back(static_cast<char>(0x80 | (code & 0x3f)));
          }
        } else {
          return false;
        }
        continue;
      }
      size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
      if (n == 0 || (n == 2 && c < 0xc2) || i_ + n > t_.size()) return false;
      for (size_t k = 1; k < n; ++k) {
        if ((static_cast<unsigned char>(t_[i_ + k]) & 0xc0) != 0x80) return false;
      }
      out->append(t_.substr(i_, n));
      i_ += n;
    }
    return false;
  }

  std::string_view t_;
  size_t i_ = 0;
};

TEST(StrictJsonLineTest, ReadsObjectsAndRefusesWhatIsNotJson) {
  auto ok = StrictJsonLine(R"({"a":"x\ny","b":[1,-2.5e3,{"c":null}],"d":true})").Object();
  ASSERT_TRUE(ok);
  EXPECT_EQ("x\ny", (*ok)["a"]);
  for (const char* bad : {R"({"a":"x"} )" "x", R"({"a":"x","a":"y"})", "{\"a\":\"x\ny\"}", R"({"a":"x\q"})",
                          R"({"a":"x")", R"({a:"x"})", R"({"a":01})", "{\"a\":\"\xff\"}", R"({"a":"x",})"}) {
    EXPECT_FALSE(StrictJsonLine(bad).Object()) << bad;
  }
}

// Runs `body` on a thread until `stop` is set; joins even when an
// assertion returns early.
class Background {
 public:
  explicit Background(std::function<void(const std::atomic<bool>&)> body)
      : thread_([this, body] { body(stop_); }) {}
  ~Background() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A connected agent of `agency` whose HELLO carries `agent_name`; waits
// until the broker logged its connection.
std::unique_ptr<Agent> ConnectAs(const BrokerProcess& broker, const TestAgency& agency,
                                 const std::string& agent_name, const std::string& logged) {
  AgentOptions options = broker.AgentFor(agency);
  options.agent_name = agent_name;
  auto agent = Agent::Connect(options);
  if (!agent.ok()) return nullptr;
  // A send makes sure the handshake (and so the HELLO) happened.
  auto receipt = (*agent)->Send(Envelope(wire::NewMessageId(), "b"));
  if (!receipt.ok() || !broker.WaitForLog(logged)) return nullptr;
  return std::move(*agent);
}

TEST(LogInjectionTest, ANewlineInTheAgentNameCannotForgeALogLine) {
  TempDir dir;
  TestAgency a = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b = MakeAgency("b", "youth-welfare", "mombasa");
  BrokerProcess broker(dir, {a, b});
  ASSERT_TRUE(broker.Start().ok());
  const std::string forged =
      "liaison-agent/0.1.0\n2026-01-01T00:00:00.000Z critical liaison-broker: event=ledger_verify_failed "
      "record=1\r\n" + std::string(4000, 'A');
  auto agent = ConnectAs(broker, a, forged, "event=connect agency=a");
  ASSERT_NE(nullptr, agent) << broker.log();

  // Every line is one of the broker's own events, and none was forged.
  const std::regex own_line(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (trace|debug|info |warning|error) liaison-broker: event=[a-z_]+( .*)?$)");
  const std::string log = broker.log();
  for (const std::string& line : Lines(log)) {
    EXPECT_TRUE(std::regex_match(line, own_line)) << "not a broker line: " << line.substr(0, 200);
    EXPECT_LT(line.size(), 600u) << line.substr(0, 200);
  }
  // The name is still there for the operator, escaped and cut.
  EXPECT_NE(std::string::npos,
            log.find("agent=\"liaison-agent/0.1.0\\n2026-01-01T00:00:00.000Z critical liaison-br...[+"))
      << log;
}

TEST(LogInjectionTest, AHelloFloodNeitherWipesTheLogNorStallsOthers) {
  TempDir dir;
  TestAgency a = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b = MakeAgency("b", "youth-welfare", "mombasa");
  // A rotation of 2 x 1 MiB: what one 1 MB name per HELLO used to wipe.
  BrokerProcess broker(dir, {a, b}, "  max_file_bytes: 1048576\n  max_files: 2\n");
  ASSERT_TRUE(broker.Start().ok());
  ASSERT_TRUE(broker.WaitForLog("event=listening"));
  const std::string first_line = Lines(broker.log()).at(0);
  auto well_behaved = Agent::Connect(broker.AgentFor(b));
  ASSERT_TRUE(well_behaved.ok());
  ASSERT_TRUE((*well_behaved)->Send(Envelope("warm-up", "a")).ok());

  // Agency a (a valid key: the attacker is an authenticated, broken or
  // hostile agent) says HELLO with a 1 MB name as fast as it can.
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(wire::CreateHelloDirect(fbb, wire::Role::sender, std::string(1000 * 1000, 'x').c_str()));
  const std::vector<uint8_t> hello(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  std::atomic<int> sent{0};
  std::optional<Background> flood;
  flood.emplace([&](const std::atomic<bool>& stop) {
    zmq::context_t context;
    zmq::socket_t raw(context, zmq::socket_type::dealer);
    raw.set(zmq::sockopt::linger, 0);
    raw.set(zmq::sockopt::sndhwm, 4);
    raw.set(zmq::sockopt::sndtimeo, 200);
    raw.set(zmq::sockopt::curve_serverkey, broker.broker_keys().public_z85);
    raw.set(zmq::sockopt::curve_publickey, a.keys.public_z85);
    raw.set(zmq::sockopt::curve_secretkey, a.keys.secret_z85);
    raw.connect(broker.endpoint());
    while (!stop && sent < 400) {
      std::array<zmq::const_buffer, 2> frames = {zmq::str_buffer("HELLO"), zmq::buffer(hello)};
      if (zmq::send_multipart(raw, frames, zmq::send_flags::none)) ++sent;
    }
  });
  const auto flood_started = Clock::now();
  while (sent < 60 && Clock::now() - flood_started < 10s) std::this_thread::sleep_for(10ms);
  // While the flood runs, the other agency is served within 1 s.
  for (int i = 0; i < 3; ++i) {
    const auto started = Clock::now();
    auto receipt = (*well_behaved)->Send(Envelope("during-flood-" + std::to_string(i), "a"));
    const auto took = Clock::now() - started;
    ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
    EXPECT_EQ(wire::Code::ok, (*receipt)->code());
    EXPECT_LT(took, 1s) << "send " << i << " took "
                        << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  }
  while (sent < 80 && Clock::now() - flood_started < 10s) std::this_thread::sleep_for(10ms);
  flood.reset();
  ASSERT_GE(sent.load(), 80) << "the flood did not get going";
  ASSERT_TRUE(broker.WaitForLog("event=hello_flood agency=a")) << broker.log().substr(0, 2000);
  // The first line of the log survived: no rotation was wiped.
  const std::string log = broker.log();
  EXPECT_NE(std::string::npos, log.find(first_line)) << "the start of the log was rotated away";
  uintmax_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().filename().string().starts_with("broker")) total += entry.file_size();
  }
  EXPECT_LT(total, 256u * 1024) << "the log grew by " << total << " bytes";
  // Logged once per interval, not per HELLO.
  size_t flood_lines = 0;
  for (size_t at = log.find("event=hello_flood"); at != std::string::npos;
       at = log.find("event=hello_flood", at + 1)) {
    ++flood_lines;
  }
  EXPECT_GE(flood_lines, 1u);
  EXPECT_LE(flood_lines, 2u);
  EXPECT_EQ(0, broker.Stop());
}

TEST(LogInjectionTest, JsonLogLinesAreObjectsAndAHostileNameStaysInItsField) {
  TempDir dir;
  TestAgency a = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b = MakeAgency("b", "youth-welfare", "mombasa");
  BrokerProcess broker(dir, {a, b}, "  format: json\n");
  ASSERT_TRUE(broker.Start().ok());
  const std::string hostile =
      "evil\" \xff\x01 \xc3\xa9 agency=b event=ledger_verify_failed\n{\"level\":\"critical\"} level=critical";
  auto agent = ConnectAs(broker, a, hostile, R"("event":"connect")");
  ASSERT_NE(nullptr, agent) << broker.log();
  ASSERT_TRUE(agent->Send(Envelope("json-1", "b")).ok());
  ASSERT_TRUE(broker.WaitForLog(R"("id":"json-1")")) << broker.log();

  bool saw_connect = false, saw_message = false;
  for (const std::string& line : Lines(broker.log())) {
    auto fields = StrictJsonLine(line).Object();
    ASSERT_TRUE(fields) << "not a JSON object: " << line;
    EXPECT_EQ("liaison-broker", (*fields)["process"]) << line;
    EXPECT_FALSE((*fields)["time"].empty()) << line;
    // Every line of the broker is an event with its own fields.
    EXPECT_FALSE((*fields)["event"].empty()) << line;
    EXPECT_NE("ledger_verify_failed", (*fields)["event"]) << line;
    EXPECT_NE("critical", (*fields)["level"]) << line;
    if ((*fields)["event"] == "connect" && (*fields)["agent"].starts_with("evil")) {
      saw_connect = true;
      EXPECT_EQ("a", (*fields)["agency"]) << line;
      EXPECT_EQ("sender", (*fields)["role"]) << line;
      EXPECT_EQ("info", (*fields)["level"]) << line;
      // The name, up to the cap, inside its own field.
      EXPECT_NE(std::string::npos,
                (*fields)["agent"].find("\xc3\xa9 agency=b event=ledger_verify_failed\n{\"level\":\"cri"))
          << line;
      EXPECT_NE(std::string::npos, (*fields)["agent"].find("...[+")) << line;
    }
    if ((*fields)["event"] == "message" && (*fields)["id"] == "json-1") {
      saw_message = true;
      EXPECT_EQ("a", (*fields)["agency"]);
      EXPECT_EQ("CaseClosure", (*fields)["type"]);
    }
  }
  EXPECT_TRUE(saw_connect) << broker.log();
  EXPECT_TRUE(saw_message) << broker.log();
}

}  // namespace
}  // namespace liaison::testing
