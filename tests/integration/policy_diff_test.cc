// `liaison policy diff` on a prepared pair of policy sets: the example
// policies, and the same with two known edits by exit-mombasa's DPO (one
// widens a field to youth welfare, one withdraws the break-glass release to
// the security agency). The diff must list exactly those changes, and the
// widening must give the widening exit code.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <set>

#include "integration/broker_process.h"

namespace liaison::testing {
namespace {

namespace fs = std::filesystem;

class PolicyDiffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    before_ = dir_.file("before");
    after_ = dir_.file("after");
    fs::copy(LIAISON_SOURCE_DIR "/policies", before_, fs::copy_options::recursive);
    fs::copy(LIAISON_SOURCE_DIR "/policies", after_, fs::copy_options::recursive);
  }

  void Edit(const std::string& file, const std::string& from, const std::string& to) {
    const std::string path = after_ + "/agencies/" + file;
    const std::string text = ReadText(path);
    const size_t at = text.find(from);
    ASSERT_NE(std::string::npos, at) << from;
    WriteText(path, text.substr(0, at) + to + text.substr(at + from.size()));
  }

  int Diff(std::vector<std::string> extra, std::string* out) {
    std::vector<std::string> argv = {LIAISON_CLI_BIN, "policy", "diff", before_, after_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::string err;
    const int rc = RunCommand(argv, out, &err);
    err_ = err;
    return rc;
  }

  TempDir dir_;
  std::string before_, after_, err_;
};

// The "changes" of the JSON output, one "sender>recipient type/purpose:
// before => after" line per flow and one "  path: a -> b" per field.
std::set<std::string> Changes(const std::string& json) {
  std::set<std::string> out;
  std::regex flow(
      "\\{\"sender\":\"([^\"]*)\",\"recipient\":\"([^\"]*)\",\"recipient_kind\":\"[^\"]*\",\"type\":\"([^\"]*)\","
      "\"purpose\":\"([^\"]*)\",\"sample\":\"[^\"]*\",\"seen\":\"[^\"]*\",\"before\":\"([^\"]*)\","
      "\"after\":\"([^\"]*)\"");
  std::regex field("\\{\"path\":\"([^\"]*)\",\"before\":\"([^\"]*)\",\"after\":\"([^\"]*)\",\"widens\":(true|false)");
  std::istringstream lines(json);
  std::string line;
  while (std::getline(lines, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, flow)) continue;
    const std::string name = m[1].str() + ">" + m[2].str() + " " + m[3].str() + "/" + m[4].str();
    out.insert(name + ": " + m[5].str() + " => " + m[6].str());
    for (std::sregex_iterator it(line.begin(), line.end(), field), end; it != end; ++it) {
      out.insert(name + "  " + (*it)[1].str() + ": " + (*it)[2].str() + " -> " + (*it)[3].str() +
                 ((*it)[4].str() == "true" ? " WIDENS" : ""));
    }
  }
  return out;
}

TEST_F(PolicyDiffTest, IdenticalSetsChangeNothing) {
  std::string out;
  EXPECT_EQ(0, Diff({}, &out)) << err_;
  EXPECT_NE(std::string::npos, out.find("0 changed: 0 flows newly denied, 0 newly released, 0 fields newly shared"))
      << out;
}

TEST_F(PolicyDiffTest, ListsExactlyTheExpectedChangesAndExitsWithTheWideningCode) {
  // Widens: the child's full date of birth instead of an age band.
  Edit("exit-mombasa.yaml", "subject.date_of_birth: generalize(age-band)", "subject.date_of_birth: allow");
  // Narrows: the break-glass release now goes to no security agency.
  Edit("exit-mombasa.yaml", "kinds: [security-agency]", "kinds: [prison-service]");

  std::string json;
  ASSERT_EQ(3, Diff({"--json"}, &json)) << err_ << json;
  const std::set<std::string> expected = {
      "exit-mombasa>youth-welfare-mombasa CaseReferral/referral-for-services: "
      "released (minor-to-youth-welfare, referrals-of-children) => "
      "released (minor-to-youth-welfare, referrals-of-children)",
      "exit-mombasa>youth-welfare-mombasa CaseReferral/referral-for-services  "
      "subject.date_of_birth: generalize(age-band) -> allow WIDENS",
      "exit-mombasa>security-coast CaseReferral/imminent-threat: "
      "released (imminent-threat-break-glass, imminent-threats) => denied (no-release-rule)",
      // Still denied, now by the prison service's accept side: a changed
      // reason is listed, and widens nothing.
      "exit-mombasa>prison-shimo CaseReferral/imminent-threat: denied (no-release-rule) => denied (no-accept-rule)",
  };
  const std::set<std::string> got = Changes(json);
  std::set<std::string> flows_and_widenings;
  for (const auto& c : got) {
    // Fields of the withdrawn flow go from their actions to drop: checked below.
    if (c.find("exit-mombasa>security-coast CaseReferral/imminent-threat  ") == 0) continue;
    flows_and_widenings.insert(c);
  }
  EXPECT_EQ(expected, flows_and_widenings) << json;
  size_t withdrawn_fields = 0;
  for (const auto& c : got) {
    if (c.find("exit-mombasa>security-coast CaseReferral/imminent-threat  ") != 0) continue;
    ++withdrawn_fields;
    EXPECT_NE(std::string::npos, c.find("-> drop")) << c;
    EXPECT_EQ(std::string::npos, c.find("WIDENS")) << c;
  }
  EXPECT_GT(withdrawn_fields, 0u) << json;
  EXPECT_NE(std::string::npos, json.find("\"newly_denied\":1,\"newly_released\":0,\"fields_widened\":1"))
      << json;
  EXPECT_NE(std::string::npos, json.find("\"widened_by_kind\":{\"youth-welfare\":1}")) << json;

  // The text form says the same, with the deciding lines of both sides.
  std::string text;
  ASSERT_EQ(3, Diff({}, &text)) << err_;
  EXPECT_NE(std::string::npos,
            text.find("1 flows newly denied, 0 newly released, 1 fields newly shared (1 with youth-welfare)"))
      << text;
  EXPECT_NE(std::string::npos, text.find("+ subject.date_of_birth: generalize(age-band) -> allow")) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex("release after  \\S*agencies/exit-mombasa.yaml:\\d+ "
                                                 "\"subject.date_of_birth: allow\"")))
      << text;
}

TEST_F(PolicyDiffTest, ANarrowingAloneExitsZero) {
  Edit("exit-mombasa.yaml", "kinds: [security-agency]", "kinds: [prison-service]");
  std::string out;
  EXPECT_EQ(0, Diff({}, &out)) << err_ << out;
  EXPECT_NE(std::string::npos, out.find("1 flows newly denied")) << out;
}

TEST_F(PolicyDiffTest, TheLedgerWindowIsParsed) {
  const std::string ledger = dir_.file("ledger.log");
  WriteText(ledger, "");
  std::string out;
  EXPECT_EQ(0, Diff({"--ledger", ledger, "--since", "30d"}, &out)) << err_ << out;
  EXPECT_EQ(2, Diff({"--ledger", ledger, "--since", "soon"}, &out));
}

}  // namespace
}  // namespace liaison::testing
