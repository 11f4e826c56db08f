// Reading YAML: a key that repeats an earlier key of the same map is an error
// naming both positions, in every file liaison reads (yaml-cpp alone keeps one
// of the two and drops the other without a word); an unquoted '*' gets advice.
#include "liaison/yaml_util.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "config/broker_config.h"
#include "explain/policy_tests.h"
#include "gateway_config.h"
#include "liaison/agent.h"
#include "policy/policy_set.h"
#include "testing/fixtures.h"

namespace liaison {
namespace {

using testing::TempDir;
using testing::WriteText;

std::string ParseError(const std::string& text) {
  auto doc = ParseYaml(text, "f.yaml");
  EXPECT_FALSE(doc.ok()) << "parsed without error:\n" << text;
  return doc.ok() ? "" : doc.status().message();
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(YamlDuplicateKeyTest, SecondTopLevelBlockIsAnErrorNamingBothPositions) {
  const std::string e = ParseError(
      "accept:\n  - id: a\n    messages: [CaseReferral]\n"
      "release: []\n"
      "accept:\n  - id: b\n    messages: [CaseUpdate]\n");
  EXPECT_TRUE(Has(e, "f.yaml:5:1: duplicate key 'accept': first at line 1, column 1")) << e;
}

TEST(YamlDuplicateKeyTest, RuleWithoutItsDashBecomesDuplicateKeysOfTheRuleAbove) {
  // The 26-instead-of-27-rules case: the second rule lost its '- ', so its
  // keys continue the first rule's map, and YAML would keep only one of each.
  const std::string e = ParseError(
      "release:\n"
      "  - id: first\n"
      "    messages: [CaseReferral]\n"
      "    fields: {others: drop}\n"
      "    id: second\n"
      "    messages: [CaseUpdate]\n"
      "    fields: {others: drop}\n");
  EXPECT_TRUE(Has(e, "f.yaml:5:5: duplicate key 'release[0].id': first at line 2, column 5")) << e;
  EXPECT_TRUE(Has(e, "f.yaml:6:5: duplicate key 'release[0].messages': first at line 3, column 5"))
      << e;
  EXPECT_TRUE(Has(e, "begin it with '- '")) << e;
}

TEST(YamlDuplicateKeyTest, RepeatedKeyInsideARuleAndInFlowMaps) {
  EXPECT_TRUE(Has(ParseError("release:\n  - id: a\n    messages: [CaseReferral]\n"
                             "    purposes: [x]\n    messages: [CaseUpdate]\n"),
                  "f.yaml:5:5: duplicate key 'release[0].messages': first at line 3, column 5"));
  EXPECT_TRUE(Has(ParseError("fields: {subject.phone: drop, subject.phone: allow}\n"),
                  "f.yaml:1:31: duplicate key 'fields.subject.phone': first at line 1, column 10"));
  // Quoting does not make a different key.
  EXPECT_TRUE(Has(ParseError("fields:\n  '*': drop\n  \"*\": allow\n"),
                  "f.yaml:3:3: duplicate key 'fields.*'"));
}

TEST(YamlDuplicateKeyTest, EveryDuplicateIsReported) {
  const std::string e = ParseError("a: 1\nb: 2\na: 3\nc:\n  d: 1\n  d: 2\n");
  EXPECT_TRUE(Has(e, "f.yaml:3:1: duplicate key 'a'")) << e;
  EXPECT_TRUE(Has(e, "f.yaml:6:3: duplicate key 'c.d'")) << e;
}

TEST(YamlDuplicateKeyTest, SameKeyInDifferentMapsIsFine) {
  auto doc = ParseYaml(
      "release:\n  - id: a\n    fields: {x: allow}\n  - id: b\n    fields: {x: drop}\n"
      "accept:\n  - id: c\n    to: {kinds: [k]}\n    fields: {kinds: allow}\n"
      "nested: {a: {a: {a: 1}}}\nlist: [{a: 1}, {a: 2}]\n",
      "f.yaml");
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  EXPECT_EQ("b", (*doc)["release"][1]["id"].Scalar());
}

TEST(YamlAliasTest, UnquotedStarExplainsHowToQuoteIt) {
  const std::string key = ParseError("fields:\n  subject.phone: drop\n  *: allow\n");
  EXPECT_TRUE(Has(key, "f.yaml:3:")) << key;
  EXPECT_TRUE(Has(key, "write the field pattern in quotes, as '*': allow")) << key;
  const std::string flow = ParseError("fields: {*: allow}\n");
  EXPECT_TRUE(Has(flow, "f.yaml:1:")) << flow;
  EXPECT_TRUE(Has(flow, "'*': allow")) << flow;
  const std::string value = ParseError("fields:\n  subject: *\n");
  EXPECT_TRUE(Has(value, "'*'")) << value;
  // Other syntax errors get no such advice.
  EXPECT_FALSE(Has(ParseError("a: [1, 2\n"), "'*'"));
}

TEST(YamlLoadFileTest, MissingFileAndDuplicateInAFile) {
  TempDir dir;
  EXPECT_EQ(Status::Code::kNotFound, LoadYamlFile(dir.file("none.yaml")).status().code());
  WriteText(dir.file("x.yaml"), "a: 1\na: 2\n");
  auto doc = LoadYamlFile(dir.file("x.yaml"));
  ASSERT_FALSE(doc.ok());
  EXPECT_TRUE(Has(doc.status().message(), dir.file("x.yaml") + ":2:1: duplicate key 'a'"));
}

// Many files are parsed on several threads, in chunks: each still reaches
// the caller once, in order, on the caller's thread, with its own errors.
TEST(YamlLoadFileTest, ManyFilesArriveInOrderWithTheirOwnErrors) {
  TempDir dir;
  std::vector<std::string> paths;
  for (int i = 0; i < 600; ++i) {  // more than one chunk, more than enough for threads
    paths.push_back(dir.file("f" + std::to_string(i) + ".yaml"));
    WriteText(paths.back(), i == 17 ? "n: 17\nn: 18\n" : i == 300 ? "n: [17\n" : "n: " + std::to_string(i) + "\n");
  }
  paths.push_back(dir.file("none.yaml"));
  const std::thread::id caller = std::this_thread::get_id();
  std::vector<size_t> seen;
  ForEachYamlFile(paths, [&](size_t i, StatusOr<YAML::Node>& doc) {
    EXPECT_EQ(caller, std::this_thread::get_id());
    seen.push_back(i);
    if (i == 17) {
      ASSERT_FALSE(doc.ok());
      EXPECT_TRUE(Has(doc.status().message(), paths[17] + ":2:1: duplicate key 'n'")) << doc.status().message();
    } else if (i == 300) {
      ASSERT_FALSE(doc.ok());
      EXPECT_TRUE(Has(doc.status().message(), paths[300] + ":")) << doc.status().message();
    } else if (i == 600) {
      EXPECT_EQ(Status::Code::kNotFound, doc.status().code());
    } else {
      ASSERT_TRUE(doc.ok()) << doc.status().ToString();
      EXPECT_EQ(static_cast<int>(i), (*doc)["n"].as<int>());
    }
  });
  std::vector<size_t> expected(paths.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = i;
  EXPECT_EQ(expected, seen);
}

// Each loader reads through LoadYamlFile, so each refuses a duplicate key.
TEST(YamlLoadersTest, BrokerAgentAndGatewayConfigsRefuseDuplicateKeys) {
  TempDir dir;
  WriteText(dir.file("broker.yaml"), "listen: tcp://127.0.0.1:7700\nlisten: tcp://127.0.0.1:7701\n");
  auto broker = broker::LoadBrokerConfig(dir.file("broker.yaml"));
  ASSERT_FALSE(broker.ok());
  EXPECT_TRUE(Has(broker.status().message(), "broker.yaml:2:1: duplicate key 'listen'"))
      << broker.status().message();

  WriteText(dir.file("agent.yaml"), "broker: tcp://127.0.0.1:7700\nbroker: tcp://10.0.0.1:7700\n");
  auto agent = LoadAgentConfig(dir.file("agent.yaml"));
  ASSERT_FALSE(agent.ok());
  EXPECT_TRUE(Has(agent.status().message(), "agent.yaml:2:1: duplicate key 'broker'"))
      << agent.status().message();

  WriteText(dir.file("gateway.yaml"), "listen: 127.0.0.1:8080\nlog:\n  level: info\n  level: debug\n");
  auto gateway = gateway::LoadGatewayConfig(dir.file("gateway.yaml"));
  ASSERT_FALSE(gateway.ok());
  EXPECT_TRUE(Has(gateway.status().message(), "gateway.yaml:4:3: duplicate key 'log.level'"))
      << gateway.status().message();
}

TEST(YamlLoadersTest, PolicyVocabularyAndTestFilesRefuseDuplicateKeys) {
  TempDir dir;
  auto a = testing::MakeAgency("exit-a", "exit-programme", "mombasa");
  a.rules = "release:\n  - id: one\n    messages: [CaseReferral]\n    fields: {others: drop}\n"
            "    id: two\n    messages: [CaseUpdate]\n    fields: {others: drop}\n";
  testing::WritePolicies(dir.path().string(), {a});
  auto set = policy::PolicySet::Load(dir.path().string(), "secret");
  ASSERT_FALSE(set.ok());
  EXPECT_TRUE(Has(set.status().message(), "exit-a.yaml:")) << set.status().message();
  EXPECT_TRUE(Has(set.status().message(), "duplicate key 'release[0].id'"))
      << set.status().message();

  a.rules = testing::kAllowEverything;
  testing::WritePolicies(dir.path().string(), {a});
  const std::string vocabulary = dir.file("vocabulary.yaml");
  const std::string text = testing::ReadText(vocabulary);
  WriteText(vocabulary, text + "purposes:\n  again: a second purposes block\n");
  set = policy::PolicySet::Load(dir.path().string(), "secret");
  ASSERT_FALSE(set.ok());
  EXPECT_TRUE(Has(set.status().message(), "vocabulary.yaml:")) << set.status().message();
  EXPECT_TRUE(Has(set.status().message(), "duplicate key 'purposes'")) << set.status().message();

  WriteText(vocabulary, text);
  auto good = policy::PolicySet::Load(dir.path().string(), "secret");
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  WriteText(dir.file("tests/t.yaml"),
            "- name: one\n  from: exit-a\n  to: exit-a\n  from: exit-b\n");
  auto results = policy::RunPolicyTests(**good, dir.file("tests"));
  ASSERT_FALSE(results.ok());
  EXPECT_TRUE(Has(results.status().message(), "t.yaml:4:3: duplicate key '[0].from'"))
      << results.status().message();
}

// Found by fuzz_policy_load: an agency file of one ',' hung the policy load
// (yaml-cpp 0.7 reports it as an empty document, again and again). Every
// wait is bounded: the parse runs on its own thread.
TEST(YamlDocumentTest, AStrayCommaIsASyntaxErrorNotAHang) {
  for (const std::string text : {",", ",,", ",\naccept: []\n"}) {
    // Detached: a parse that never ends fails the test and leaves with the process.
    std::packaged_task<StatusOr<YAML::Node>()> task([text] { return ParseYaml(text, "f.yaml"); });
    auto parsed = task.get_future();
    std::thread(std::move(task)).detach();
    ASSERT_EQ(std::future_status::ready, parsed.wait_for(std::chrono::seconds(10)))
        << "the parse of '" << text << "' does not end";
    auto doc = parsed.get();
    ASSERT_FALSE(doc.ok()) << text;
    EXPECT_TRUE(Has(doc.status().message(), "f.yaml:1:1: YAML syntax error")) << doc.status().message();
  }
}

TEST(YamlDocumentTest, ASecondDocumentIsAnErrorWhereItStarts) {
  const std::string e = ParseError("release: []\n---\naccept: []\n");
  EXPECT_TRUE(Has(e, "f.yaml:2:1: a second YAML document starts here")) << e;
  // One document that opens with '---' is one document.
  EXPECT_TRUE(ParseYaml("---\nrelease: []\n", "f.yaml").ok());
}

}  // namespace
}  // namespace liaison
