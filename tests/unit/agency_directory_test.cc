#include "registry/agency_directory.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "testing/fixtures.h"

namespace liaison::broker {
namespace {

using testing::MakeAgency;
using testing::TempDir;
using testing::WriteText;

TEST(AgencyDirectoryTest, LoadsRegisteredAgenciesAndIndexesThem) {
  TempDir dir;
  auto a = MakeAgency("exit-a", "exit-programme", "mombasa");
  auto b = MakeAgency("youth-b", "youth-welfare", "mombasa");
  auto c = MakeAgency("youth-c", "youth-welfare", "kwale");
  testing::WritePolicies(dir.path().string(), {a, b, c});
  auto d = AgencyDirectory::Load(dir.path().string());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(3u, (*d)->agencies().size());
  ASSERT_NE(nullptr, (*d)->Find("youth-b"));
  EXPECT_EQ("kwale", (*d)->Find("youth-c")->region);
  EXPECT_EQ(nullptr, (*d)->Find("nobody"));
  const Agency* by_key = (*d)->FindByKey(DecodeZ85Key(b.keys.public_z85));
  ASSERT_NE(nullptr, by_key);
  EXPECT_EQ("youth-b", by_key->id);
  EXPECT_EQ(2u, (*d)->OfKind("youth-welfare").size());
  EXPECT_TRUE((*d)->OfKind("prison-service").empty());
}

TEST(AgencyDirectoryTest, TheShippedExamplesLoad) {
  std::vector<std::string> warnings;
  auto d = AgencyDirectory::Load(std::string(LIAISON_SOURCE_DIR) + "/policies", &warnings);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_GE((*d)->agencies().size(), 5u);
  // Keys are never committed: every example warns that it cannot connect yet.
  EXPECT_EQ((*d)->agencies().size(), warnings.size());
  for (const char* kind : {"exit-programme", "youth-welfare", "health-service", "prison-service",
                           "security-agency"}) {
    EXPECT_FALSE((*d)->OfKind(kind).empty()) << kind;
  }
}

TEST(AgencyDirectoryTest, ReportsEveryErrorWithFileLineAndHint) {
  TempDir dir;
  auto good = MakeAgency("good", "exit-programme", "mombasa");
  testing::WritePolicies(dir.path().string(), {good});
  WriteText(dir.file("agencies/typo.yaml"),
            "id: typo\nname: T\nkind: youth-welfair\nregion: mombasa\n");
  WriteText(dir.file("agencies/renamed.yaml"),
            "id: other-name\nname: R\nkind: exit-programme\nregion: mombasa\n");
  WriteText(dir.file("agencies/badkey.yaml"),
            "id: badkey\nname: B\nkind: exit-programme\nregion: kwale\npublic_key: \"abc\"\n");
  WriteText(dir.file("agencies/dupkey.yaml"),
            "id: dupkey\nname: D\nkind: exit-programme\nregion: kwale\npublic_key: \"" +
                good.keys.public_z85 + "\"\n");
  WriteText(dir.file("agencies/extra.yaml"),
            "id: extra\nname: E\nkind: exit-programme\nregion: kwale\nrelase: []\n");
  auto d = AgencyDirectory::Load(dir.path().string());
  ASSERT_FALSE(d.ok());
  const std::string& m = d.status().message();
  EXPECT_NE(std::string::npos, m.find("typo.yaml:3:7")) << m;
  EXPECT_NE(std::string::npos, m.find("did you mean 'youth-welfare'")) << m;
  EXPECT_NE(std::string::npos, m.find("renamed.yaml:1:5")) << m;
  EXPECT_NE(std::string::npos, m.find("name the file other-name.yaml")) << m;
  EXPECT_NE(std::string::npos, m.find("badkey.yaml:5:13")) << m;
  EXPECT_NE(std::string::npos, m.find("good.yaml:5:13")) << m;
  EXPECT_NE(std::string::npos, m.find("already registered for agency 'dupkey'")) << m;
  EXPECT_NE(std::string::npos, m.find("extra.yaml:5:1")) << m;
  EXPECT_NE(std::string::npos, m.find("did you mean 'release'")) << m;
}

TEST(AgencyDirectoryTest, MissingFolderOrVocabulary) {
  TempDir dir;
  EXPECT_FALSE(AgencyDirectory::Load(dir.path().string()).ok());
  WriteText(dir.file("vocabulary.yaml"), "kinds: {a: b}\nregions: {c: d}\n");
  auto d = AgencyDirectory::Load(dir.path().string());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(std::string::npos, d.status().message().find("agencies"));
}

TEST(AgencyDirectoryTest, AnEscalationContactMustBeARegisteredAgency) {
  TempDir dir;
  auto coordinator = MakeAgency("coordinator", "exit-programme", "mombasa");
  auto sender = MakeAgency("sender", "exit-programme", "mombasa");
  sender.rules = "escalation:\n  agency: coordinator\n";
  auto typo = MakeAgency("typo", "exit-programme", "mombasa");
  typo.rules = "escalation:\n  agency: coordinater\n";
  testing::WritePolicies(dir.path().string(), {coordinator, sender, typo});
  auto d = AgencyDirectory::Load(dir.path().string());
  ASSERT_FALSE(d.ok());
  const std::string text = d.status().message();
  // Where (file:line:col), what, and the likely meant id.
  EXPECT_NE(std::string::npos, text.find("typo.yaml:7:")) << text;
  EXPECT_NE(std::string::npos, text.find("'escalation.agency': unknown agency 'coordinater'")) << text;
  EXPECT_NE(std::string::npos, text.find("did you mean 'coordinator'")) << text;
  EXPECT_EQ(std::string::npos, text.find("sender.yaml")) << text;

  testing::WritePolicies(dir.path().string(), {coordinator, sender});
  std::filesystem::remove(dir.file("agencies/typo.yaml"));
  d = AgencyDirectory::Load(dir.path().string());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ("coordinator", (*d)->Find("sender")->escalation_agency);
  EXPECT_EQ("", (*d)->Find("coordinator")->escalation_agency);

  WriteText(dir.file("agencies/sender.yaml"), "id: sender\nname: S\nkind: exit-programme\nregion: mombasa\n"
                                              "escalation: coordinator\n");
  d = AgencyDirectory::Load(dir.path().string());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(std::string::npos, d.status().message().find("sender.yaml:5:")) << d.status().message();
}

}  // namespace
}  // namespace liaison::broker
