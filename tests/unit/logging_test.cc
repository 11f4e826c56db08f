#include "liaison/logging.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <string>

#include "testing/fixtures.h"

namespace liaison {
namespace {

TEST(LogValueTest, PlainTokensPassAndEverythingElseIsQuotedEscapedAndCut) {
  EXPECT_EQ("liaison-agent/0.1.0", LogValue("liaison-agent/0.1.0"));
  EXPECT_EQ("01J9ZK3V8Q7W6X5Y4T3S2R1P0N", LogValue("01J9ZK3V8Q7W6X5Y4T3S2R1P0N"));
  EXPECT_EQ("\"\"", LogValue(""));
  EXPECT_EQ("\"a b\"", LogValue("a b"));
  EXPECT_EQ("\"x\\ncritical \\\"y\\\" \\\\ \\r\\t\\x01\\xff\"", LogValue("x\ncritical \"y\" \\ \r\t\x01\xff"));
  EXPECT_EQ("\"x=1\"", LogValue("x=1"));  // cannot pose as a pair
  EXPECT_EQ("\"" + std::string(64, 'a') + "...[+936 bytes]\"", LogValue(std::string(1000, 'a')));
  EXPECT_EQ("\"abc...[+2 bytes]\"", LogValue("abcde", 3));
}

class JsonLogTest : public ::testing::Test {
 protected:
  // Logs `message` with format json to a file and returns the line.
  std::string LogOne(const std::string& message) {
    LogOptions options;
    options.format = "json";
    options.console = false;
    options.file = dir_.file("log" + std::to_string(++files_) + ".json");
    const auto previous = spdlog::default_logger();
    EXPECT_TRUE(SetupLogging("test", options).ok());
    spdlog::info("{}", message);
    spdlog::default_logger()->flush();
    spdlog::set_default_logger(previous);
    const std::string text = testing::ReadText(options.file);
    const auto brace = text.find("\"process\":\"test\"");
    return brace == std::string::npos ? text : text.substr(brace + 16);
  }
  testing::TempDir dir_;
  int files_ = 0;
};

TEST_F(JsonLogTest, EachPairIsAFieldAndTheRestIsMsg) {
  EXPECT_EQ(",\"event\":\"connect\",\"agency\":\"a\",\"agent\":\"x\\n\\\"y\\\" \\u00ff \xc3\xa9\"}\n",
            LogOne("event=connect agency=a agent=" + LogValue("x\n\"y\" \xff \xc3\xa9")));
  EXPECT_EQ(",\"event\":\"stop\",\"empty\":\"\"}\n", LogOne("event=stop empty="));
  // A policy error over several lines: the pairs, then the text.
  EXPECT_EQ(",\"event\":\"start_failed\",\"reason\":\"policies_invalid\",\"msg\":\"a.yaml:3:4: bad\\nb\"}\n",
            LogOne("event=start_failed reason=policies_invalid\na.yaml:3:4: bad\nb"));
  // Our own free text with quotes inside: kept whole, as msg.
  EXPECT_EQ(",\"event\":\"x\",\"msg\":\"error=\\\"a \\\"b\\\" c\\\"\"}\n", LogOne("event=x error=\"a \"b\" c\""));
  // A key said twice, or one of the line's own: the rest is msg.
  EXPECT_EQ(",\"event\":\"x\",\"msg\":\"event=y\"}\n", LogOne("event=x event=y"));
  EXPECT_EQ(",\"msg\":\"level=critical\"}\n", LogOne("level=critical"));
  EXPECT_EQ(",\"msg\":\"just text\"}\n", LogOne("just text"));
}

}  // namespace
}  // namespace liaison
