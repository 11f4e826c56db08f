// DPO signatures and the trust rules over them (policy/signing.h,
// policy/trust.h): real Ed25519 keys in a temporary folder.
#include <gtest/gtest.h>

#include <filesystem>

#include "policy/signing.h"
#include "policy/trust.h"
#include "testing/fixtures.h"

namespace liaison::policy {
namespace {

using liaison::testing::ReadText;
using liaison::testing::TempDir;
using liaison::testing::WriteText;

class SigningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.file("policies");
    keys_ = tmp_.file("keys");
    WriteText(dir_ + "/vocabulary.yaml", "kinds: {}\n");
    for (const char* id : {"a", "b"}) {
      ASSERT_TRUE(WriteDpoKey(keys_, id).ok());
      WriteText(dir_ + "/agencies/" + std::string(id) + ".yaml", "id: " + std::string(id) + "\n");
      std::filesystem::create_directories(dir_ + "/dpo-keys");
      std::filesystem::copy_file(keys_ + "/" + id + ".dpo.pub", dir_ + "/dpo-keys/" + id + ".pub");
    }
  }
  void Sign(const std::string& file, const std::string& key) {
    auto k = LoadDpoPrivateKey(keys_ + "/" + key + ".dpo.key");
    ASSERT_TRUE(k.ok()) << k.status().ToString();
    ASSERT_TRUE(SignFile(file, k->get()).ok());
  }
  std::string Fp(const std::string& key) { return DpoFingerprint(*LoadDpoPublicKey(keys_ + "/" + key + ".dpo.pub")); }

  TempDir tmp_;
  std::string dir_, keys_;
};

TEST_F(SigningTest, ASignatureCoversTheExactBytes) {
  const std::string file = dir_ + "/agencies/a.yaml";
  Sign(file, "a");
  auto sigs = ReadSignatures(file + ".sig");
  ASSERT_TRUE(sigs.ok());
  ASSERT_EQ(1u, sigs->size());
  EXPECT_EQ(Fp("a"), (*sigs)[0].fingerprint());
  EXPECT_TRUE(VerifySignature(ReadText(file), (*sigs)[0]));
  EXPECT_FALSE(VerifySignature(ReadText(file) + " ", (*sigs)[0]));
  // Signing again replaces the signer's line and keeps the others'.
  Sign(file, "b");
  Sign(file, "a");
  EXPECT_EQ(2u, ReadSignatures(file + ".sig")->size());
}

TEST_F(SigningTest, AMalformedSignatureFileNamesItsLine) {
  WriteText(dir_ + "/agencies/a.yaml.sig", "# comment\ned25519 zz 00\n");
  auto sigs = ReadSignatures(dir_ + "/agencies/a.yaml.sig");
  ASSERT_FALSE(sigs.ok());
  EXPECT_NE(std::string::npos, sigs.status().message().find("a.yaml.sig:2:")) << sigs.status().message();
}

TEST_F(SigningTest, AKeyReadableByOthersIsRefused) {
  std::filesystem::permissions(keys_ + "/a.dpo.key", std::filesystem::perms::group_read,
                               std::filesystem::perm_options::add);
  auto k = LoadDpoPrivateKey(keys_ + "/a.dpo.key");
  ASSERT_FALSE(k.ok());
  EXPECT_NE(std::string::npos, k.status().message().find("chmod 600"));
}

TEST_F(SigningTest, OnboardingPinsThenOnlyThePinnedKeyOrARotationCounts) {
  Sign(dir_ + "/agencies/a.yaml", "a");
  Sign(dir_ + "/agencies/b.yaml", "b");
  Sign(dir_ + "/vocabulary.yaml", "a");
  Sign(dir_ + "/vocabulary.yaml", "b");
  auto first = CheckPolicySignatures(dir_, {}, 2);
  ASSERT_TRUE(first.ok()) << first.Message();
  ASSERT_EQ(2u, first.changes.size());
  EXPECT_EQ(Fp("a"), first.pins.at("a").fingerprint);

  // A later dpo-keys/a.pub swap changes nothing: the pin holds.
  ASSERT_TRUE(WriteDpoKey(keys_, "mallory").ok());
  std::filesystem::copy_file(keys_ + "/mallory.dpo.pub", dir_ + "/dpo-keys/a.pub",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::remove(dir_ + "/agencies/a.yaml.sig");
  Sign(dir_ + "/agencies/a.yaml", "mallory");
  auto swapped = CheckPolicySignatures(dir_, first.pins, 2);
  ASSERT_FALSE(swapped.ok());
  EXPECT_EQ("wrong_signer", swapped.problems[0].reason);

  // A rotation statement signed by the old key moves the pin.
  RotationStatement r{"a", Fp("a"), *LoadDpoPublicKey(keys_ + "/mallory.dpo.pub")};
  WriteText(dir_ + "/dpo-keys/a.x.rotation", FormatRotation(r));
  Sign(dir_ + "/dpo-keys/a.x.rotation", "b");  // not a's key: ignored
  EXPECT_FALSE(CheckPolicySignatures(dir_, first.pins, 2).ok());
  Sign(dir_ + "/dpo-keys/a.x.rotation", "a");
  Sign(dir_ + "/vocabulary.yaml", "mallory");
  auto rotated = CheckPolicySignatures(dir_, first.pins, 2);
  ASSERT_TRUE(rotated.ok()) << rotated.Message();
  ASSERT_EQ(1u, rotated.changes.size());
  EXPECT_TRUE(rotated.changes[0].rotated);
  EXPECT_EQ(Fp("a"), rotated.changes[0].old_fingerprint);
  EXPECT_EQ(Fp("mallory"), rotated.pins.at("a").fingerprint);
}

TEST_F(SigningTest, TheVocabularyQuorumCountsDistinctPinnedAgencies) {
  Sign(dir_ + "/agencies/a.yaml", "a");
  Sign(dir_ + "/agencies/b.yaml", "b");
  Sign(dir_ + "/vocabulary.yaml", "a");
  auto one = CheckPolicySignatures(dir_, {}, 2);
  ASSERT_FALSE(one.ok());
  EXPECT_EQ("vocabulary_quorum", one.problems[0].reason);
  EXPECT_TRUE(CheckPolicySignatures(dir_, {}, 1).ok());
  Sign(dir_ + "/vocabulary.yaml", "b");
  EXPECT_TRUE(CheckPolicySignatures(dir_, {}, 2).ok());
  EXPECT_FALSE(CheckPolicySignatures(dir_, {}, 3).ok());
}

TEST_F(SigningTest, PinsSurviveTheirFile) {
  Pins pins;
  auto raw = LoadDpoPublicKey(keys_ + "/a.dpo.pub");
  pins["a"] = {*raw, DpoFingerprint(*raw)};
  ASSERT_TRUE(SavePins(tmp_.file("pins"), pins).ok());
  auto loaded = LoadPins(tmp_.file("pins"));
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(Fp("a"), loaded->at("a").fingerprint);
  EXPECT_EQ(0600u, static_cast<unsigned>(std::filesystem::status(tmp_.file("pins")).permissions()) & 0777u);
  WriteText(tmp_.file("pins"), "a nothex\n");
  EXPECT_FALSE(LoadPins(tmp_.file("pins")).ok());
}

}  // namespace
}  // namespace liaison::policy
