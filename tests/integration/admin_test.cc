// The operator's HTTP endpoint, scraped over real HTTP from the running broker.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <yaml-cpp/yaml.h>

#include "integration/broker_process.h"
#include "liaison/agent.h"

namespace liaison::testing {
namespace {

using namespace std::chrono_literals;

// The samples of a text exposition, keyed by name and label set (labels in
// name order, as Prometheus compares them), and the family of each # TYPE.
struct Exposition {
  std::map<std::string, double> samples;   // "name{k=\"v\",...}" -> value
  std::map<std::string, std::string> types;  // family name -> counter, gauge, histogram
  std::map<std::string, std::set<std::string>> labels;  // sample name -> label names seen

  static std::string Key(const std::string& name, const std::map<std::string, std::string>& labels) {
    std::string key = name + "{";
    for (const auto& [k, v] : labels) key += (key.back() == '{' ? "" : ",") + k + "=\"" + v + "\"";
    return key + "}";
  }
  std::optional<double> Value(const std::string& name, const std::map<std::string, std::string>& labels = {}) const {
    auto it = samples.find(Key(name, labels));
    if (it == samples.end()) return std::nullopt;
    return it->second;
  }
};

Exposition Parse(const std::string& text) {
  Exposition e;
  std::istringstream in(text);
  const std::regex type_line("# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\\w+)");
  const std::regex sample_line("([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{(.*)\\})? (\\S+)");
  const std::regex label("([a-zA-Z_][a-zA-Z0-9_]*)=\"((?:[^\"\\\\]|\\\\.)*)\"");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, type_line)) {
      e.types[m[1]] = m[2];
    } else if (!line.empty() && line[0] != '#' && std::regex_match(line, m, sample_line)) {
      std::map<std::string, std::string> labels;
      const std::string body = m[3];
      for (std::sregex_iterator it(body.begin(), body.end(), label), end; it != end; ++it) {
        labels[(*it)[1]] = (*it)[2];
        e.labels[m[1]].insert((*it)[1]);
      }
      e.labels[m[1]];
      e.samples[Exposition::Key(m[1], labels)] = std::stod(m[4]);
    }
  }
  return e;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The PromQL expressions of the Grafana dashboard ("expr": "..." in its
// JSON, unescaped) and of the alert rules.
std::vector<std::string> DashboardAndAlertQueries() {
  std::vector<std::string> queries;
  const std::string dashboard = ReadFile(std::string(LIAISON_SOURCE_DIR) + "/deploy/grafana/liaison-dashboard.json");
  const std::regex expr("\"expr\": \"((?:[^\"\\\\]|\\\\.)*)\"");
  for (std::sregex_iterator it(dashboard.begin(), dashboard.end(), expr), end; it != end; ++it) {
    queries.push_back(std::regex_replace((*it)[1].str(), std::regex("\\\\(.)"), "$1"));
  }
  const YAML::Node alerts = YAML::LoadFile(std::string(LIAISON_SOURCE_DIR) + "/deploy/prometheus/alerts.yaml");
  for (const auto& group : alerts["groups"]) {
    for (const auto& rule : group["rules"]) queries.push_back(rule["expr"].as<std::string>());
  }
  return queries;
}

TEST(AdminTest, MetricsHealthAndReadinessOverHttp) {
  TempDir dir;
  TestAgency a = MakeAgency("a", "exit-programme", "mombasa");
  TestAgency b = MakeAgency("b", "youth-welfare", "mombasa");
  TestAgency c = MakeAgency("c", "security-agency", "mombasa");
  c.rules = "accept: []\n";
  BrokerProcess broker(dir, {a, b, c});
  ASSERT_TRUE(broker.Start().ok());
  ASSERT_TRUE(broker.WaitForLog("event=admin_listening endpoint="));
  std::smatch match;
  const std::string log = broker.log();
  ASSERT_TRUE(std::regex_search(log, match, std::regex("event=admin_listening endpoint=(\\S+)")));
  const std::string admin = match[1];

  auto sender = Agent::Connect(broker.AgentFor(a));
  for (const std::string to : {"b", "c"}) {
    wire::EnvelopeT e;
    e.id = "m-" + to;
    e.to.push_back(std::make_unique<wire::RecipientT>());
    e.to.back()->agency = to;
    e.payload.Set(wire::CaseClosureT());
    flatbuffers::FlatBufferBuilder fbb;
    wire::FinishEnvelopeBuffer(fbb, wire::Envelope::Pack(fbb, &e));
    ASSERT_TRUE((*sender)->Send({fbb.GetBufferPointer(), fbb.GetSize()}).ok());
  }
  // An unknown key is counted as an authentication failure.
  auto stranger_options = broker.AgentFor(MakeAgency("x", "k", "r"));
  stranger_options.receipt_timeout = 1000ms;
  auto stranger = Agent::Connect(stranger_options);
  EXPECT_FALSE((*stranger)->Send(std::vector<uint8_t>(64, 1)).ok());

  EXPECT_EQ(200, HttpGet(admin, "/healthz").first);
  EXPECT_EQ(200, HttpGet(admin, "/readyz").first);
  EXPECT_EQ(404, HttpGet(admin, "/nope").first);
  // Queue depths reach the metrics on the reactor's timer: scrape until b's
  // waiting message shows (bounded).
  int status = 0;
  std::string metrics;
  Exposition e;
  for (const auto deadline = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(100ms)) {
    std::tie(status, metrics) = HttpGet(admin, "/metrics");
    ASSERT_EQ(200, status);
    e = Parse(metrics);
    if (e.Value("liaison_queue_depth", {{"agency", "b"}})) break;
  }
  using Labels = std::map<std::string, std::string>;
  EXPECT_EQ(1, e.Value("liaison_decisions_total", Labels{{"type", "CaseClosure"}, {"decision", "released"}, {"agency", "a"}}))
      << metrics;
  EXPECT_EQ(1, e.Value("liaison_decisions_total", Labels{{"type", "CaseClosure"}, {"decision", "denied"}, {"agency", "a"}}));
  EXPECT_EQ(2, e.Value("liaison_receipts_total", Labels{{"code", "ok"}}));
  EXPECT_EQ(2, e.Value("liaison_receipt_latency_seconds_count"));
  EXPECT_EQ(2, e.Value("liaison_receipt_latency_seconds_bucket", Labels{{"le", "+Inf"}}));
  EXPECT_EQ(1, e.Value("liaison_auth_failures_total")) << metrics;
  EXPECT_EQ(0, e.Value("liaison_busy_total"));
  EXPECT_EQ(0, e.Value("liaison_policy_reloads_total", Labels{{"result", "failed"}}));
  EXPECT_EQ(1, e.Value("liaison_up"));
  // b has no receiver connected: its message waits.
  EXPECT_EQ(1, e.Value("liaison_queue_depth", Labels{{"agency", "b"}}));
  EXPECT_GE(e.Value("liaison_oldest_message_age_seconds", Labels{{"agency", "b"}}).value_or(-1), 0);
  EXPECT_EQ(0, e.Value("liaison_set_aside_messages", Labels{{"agency", "b"}}));
  EXPECT_EQ(1u, e.labels.at("liaison_policy_info").count("version"));
  EXPECT_EQ((std::set<std::string>{"source", "version"}), e.labels.at("liaison_build_info"));
  // The process metrics every Prometheus client exports, read from /proc.
  EXPECT_EQ("counter", e.types.at("process_cpu_seconds_total"));
  EXPECT_GT(e.Value("process_resident_memory_bytes").value_or(0), 1 << 20);
  EXPECT_GT(e.Value("process_open_fds").value_or(0), 3);
  EXPECT_GT(e.Value("process_max_fds").value_or(0), 0);
  const double started = e.Value("process_start_time_seconds").value_or(0);
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_GT(started, now - 3600);
  EXPECT_LE(started, now + 1);

  // Every series the Grafana dashboard and the alert rules query is in the
  // live exposition, with every label they group by or match on (job and
  // instance come from the scrape, `up` from Prometheus itself, probe_* from
  // the blackbox exporter).
  const std::regex metric("\\b((?:liaison|process)_[a-z_]+)(\\{([^}]*)\\})?");
  const std::regex by("\\bby \\(([^)]*)\\)");
  const std::regex matcher("([a-zA-Z_]+)\\s*(?:=~|!~|!=|=)");
  const std::set<std::string> from_scrape = {"job", "instance", "le"};
  int checked = 0;
  for (const std::string& query : DashboardAndAlertQueries()) {
    std::set<std::string> wanted_labels;
    for (std::sregex_iterator it(query.begin(), query.end(), by), end; it != end; ++it) {
      std::stringstream names((*it)[1]);
      for (std::string l; std::getline(names >> std::ws, l, ',');) wanted_labels.insert(l.substr(0, l.find(' ')));
    }
    for (std::sregex_iterator it(query.begin(), query.end(), metric), end; it != end; ++it) {
      const std::string name = (*it)[1];
      ++checked;
      ASSERT_TRUE(e.labels.count(name)) << name << " (in " << query << ") is not in /metrics:\n" << metrics;
      std::set<std::string> labels = wanted_labels;
      const std::string selector = (*it)[3];
      for (std::sregex_iterator l(selector.begin(), selector.end(), matcher), end; l != end; ++l) labels.insert((*l)[1]);
      for (const std::string& l : labels) {
        if (from_scrape.count(l)) continue;
        EXPECT_TRUE(e.labels.at(name).count(l)) << name << " has no label " << l << " (in " << query << ")";
      }
    }
  }
  EXPECT_GT(checked, 30);
}

}  // namespace
}  // namespace liaison::testing
