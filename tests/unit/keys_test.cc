#include "liaison/keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <thread>

#include "testing/fixtures.h"

namespace liaison {
namespace {

using testing::TempDir;
using testing::WriteText;

TEST(KeysTest, GeneratedPairRoundTripsThroughFiles) {
  TempDir dir;
  auto keys = GenerateCurveKeyPair();
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_TRUE(WriteCurveKeyPair(dir.path().string(), "exit", *keys).ok());

  struct stat st;
  ASSERT_EQ(0, ::stat(dir.file("exit.key").c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 0777);

  auto loaded = LoadSecretKeyFile(dir.file("exit.key"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(keys->secret_z85, loaded->secret_z85);
  EXPECT_EQ(keys->public_z85, loaded->public_z85);  // derived from the secret

  auto pub = LoadPublicKeyFile(dir.file("exit.pub"));
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(keys->public_z85, *pub);
}

TEST(KeysTest, RefusesToOverwriteAKey) {
  TempDir dir;
  auto keys = GenerateCurveKeyPair();
  ASSERT_TRUE(WriteCurveKeyPair(dir.path().string(), "a", *keys).ok());
  Status again = WriteCurveKeyPair(dir.path().string(), "a", *keys);
  EXPECT_FALSE(again.ok());
  EXPECT_NE(std::string::npos, again.message().find("remove it first"));
}

TEST(KeysTest, SecretKeyReadableByOthersIsRefused) {
  TempDir dir;
  auto keys = GenerateCurveKeyPair();
  ASSERT_TRUE(WriteCurveKeyPair(dir.path().string(), "a", *keys).ok());
  ::chmod(dir.file("a.key").c_str(), 0644);
  auto loaded = LoadSecretKeyFile(dir.file("a.key"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(Status::Code::kPermissionDenied, loaded.status().code());
  EXPECT_NE(std::string::npos, loaded.status().message().find("chmod 600"));
}

TEST(KeysTest, MissingAndMalformedKeyFiles) {
  TempDir dir;
  auto missing = LoadSecretKeyFile(dir.file("none.key"));
  EXPECT_EQ(Status::Code::kNotFound, missing.status().code());
  EXPECT_NE(std::string::npos, missing.status().message().find("liaison keygen"));

  WriteText(dir.file("short.pub"), "# comment\nabc\n");
  auto bad = LoadPublicKeyFile(dir.file("short.pub"));
  EXPECT_EQ(Status::Code::kInvalidArgument, bad.status().code());

  WriteText(dir.file("empty.pub"), "# only a comment\n\n");
  EXPECT_FALSE(LoadPublicKeyFile(dir.file("empty.pub")).ok());

  WriteText(dir.file("bad.key"), "not a key at all, but forty chars long!!\n");
  ::chmod(dir.file("bad.key").c_str(), 0600);
  EXPECT_FALSE(LoadSecretKeyFile(dir.file("bad.key")).ok());
}

TEST(KeysTest, PseudonymKeyFilesAreWrittenLoadedAndChecked) {
  TempDir dir;
  ASSERT_TRUE(WritePseudonymKeyFile(dir.file("p.key"), "").ok());
  struct stat st;
  ASSERT_EQ(0, ::stat(dir.file("p.key").c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 0777);
  auto key = LoadPseudonymKeyFile(dir.file("p.key"));
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(32u, key->size());
  EXPECT_FALSE(WritePseudonymKeyFile(dir.file("p.key"), "").ok());  // never overwrites

  // Taken from a broker CURVE key: the same secret that broker derived its
  // pseudonyms from, so they stay the same.
  auto curve = GenerateCurveKeyPair();
  ASSERT_TRUE(WriteCurveKeyPair(dir.path().string(), "broker", *curve).ok());
  ASSERT_TRUE(WritePseudonymKeyFile(dir.file("kept.key"), dir.file("broker.key")).ok());
  auto kept = LoadPseudonymKeyFile(dir.file("kept.key"));
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(DecodeZ85Key(curve->secret_z85), *kept);
  EXPECT_NE(*key, *kept);
  EXPECT_FALSE(WritePseudonymKeyFile(dir.file("x.key"), dir.file("none.key")).ok());

  auto missing = LoadPseudonymKeyFile(dir.file("none.key"));
  EXPECT_EQ(Status::Code::kNotFound, missing.status().code());
  EXPECT_NE(std::string::npos, missing.status().message().find("liaison keygen --pseudonym-key"));
  ::chmod(dir.file("p.key").c_str(), 0644);
  EXPECT_EQ(Status::Code::kPermissionDenied, LoadPseudonymKeyFile(dir.file("p.key")).status().code());
  WriteText(dir.file("short.key"), "# a comment\nabcd\n");
  ::chmod(dir.file("short.key").c_str(), 0600);
  auto short_key = LoadPseudonymKeyFile(dir.file("short.key"));
  EXPECT_EQ(Status::Code::kInvalidArgument, short_key.status().code());
  EXPECT_NE(std::string::npos, short_key.status().message().find("64 hex digits"));
}

TEST(KeysTest, StoreKeyFilesAreWrittenLoadedAndChecked) {
  TempDir dir;
  ASSERT_TRUE(WriteStoreKey(dir.file("k")).ok());
  struct stat st;
  ASSERT_EQ(0, ::stat(dir.file("k").c_str(), &st));
  EXPECT_EQ(0600u, st.st_mode & 0777);
  EXPECT_TRUE(LoadStoreKey(dir.file("k")).ok());
  EXPECT_FALSE(WriteStoreKey(dir.file("k")).ok());  // never overwrites
  ::chmod(dir.file("k").c_str(), 0640);
  EXPECT_EQ(Status::Code::kPermissionDenied, LoadStoreKey(dir.file("k")).status().code());
  WriteText(dir.file("short"), "abcd\n");
  ::chmod(dir.file("short").c_str(), 0600);
  EXPECT_FALSE(LoadStoreKey(dir.file("short")).ok());
  auto missing = LoadStoreKey(dir.file("none"));
  EXPECT_NE(std::string::npos, missing.status().message().find("liaison keygen --store-key"));
}

TEST(KeysTest, OwnerOnlyFilesWhateverTheUmask) {
  TempDir dir;
  auto mode = [&](const std::string& name) {
    struct stat st;
    return ::stat(dir.file(name).c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 0777) : -1;
  };
  const mode_t old_umask = ::umask(0);  // the most permissive: 0666 for a plain create
  ASSERT_TRUE(MakeOwnerOnlyFile(dir.file("new")).ok());
  WriteText(dir.file("old"), "x");
  ::chmod(dir.file("old").c_str(), 0644);
  ASSERT_TRUE(MakeOwnerOnlyFile(dir.file("old")).ok());
  WriteText(dir.file("strict"), "x");
  ::chmod(dir.file("strict").c_str(), 0400);
  ASSERT_TRUE(MakeOwnerOnlyFile(dir.file("strict")).ok());
  WriteText(dir.file("db"), "");
  WriteText(dir.file("db-wal"), "");
  ::chmod(dir.file("db-wal").c_str(), 0664);
  ASSERT_TRUE(MakeOwnerOnlySqliteFile(dir.file("db")).ok());
  ::umask(old_umask);
  EXPECT_EQ(mode("new"), 0600);
  EXPECT_EQ(mode("old"), 0600);
  EXPECT_EQ(mode("strict"), 0400);  // stricter stays
  EXPECT_EQ(mode("db"), 0600);
  EXPECT_EQ(mode("db-wal"), 0600);
  EXPECT_EQ(mode("db-shm"), -1);  // not created
  auto st = MakeOwnerOnlyFile(dir.file("no/such/folder/f"));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(dir.file("no/such/folder/f")), std::string::npos) << st.message();
}

// Small requests come from a per-thread stock: every one is fresh (no
// bytes handed out twice, across refills and threads), large ones go to
// OpenSSL directly.
TEST(KeysTest, RandomBytesAreNeverHandedOutTwice) {
  auto draw = [](std::set<std::string>* seen, int n, size_t size) {
    for (int i = 0; i < n; ++i) {
      std::string bytes(size, '\0');
      ASSERT_TRUE(RandomBytes(bytes.data(), bytes.size()));
      EXPECT_TRUE(seen->insert(bytes).second) << "repeated after " << i << " draws of " << size;
    }
  };
  std::set<std::string> here, there;
  draw(&here, 2000, 12);  // nonces: several refills of the stock
  draw(&here, 300, 64);   // the largest stocked size, across refills
  draw(&here, 10, 65);    // straight from OpenSSL
  std::thread other([&] { draw(&there, 2000, 12); });
  other.join();
  for (const std::string& b : there) EXPECT_EQ(0u, here.count(b)) << "two threads drew the same bytes";
  EXPECT_TRUE(RandomBytes(nullptr, 0));
}

// A forked child starts with a copy of its parent's stock: it must not hand
// out the bytes the parent hands out next (two processes of one agent would
// send different messages under one id, and one would be taken for a resend).
TEST(KeysTest, AForkedChildDrawsOtherBytesThanItsParent) {
  unsigned char first[16];
  ASSERT_TRUE(RandomBytes(first, sizeof first));  // the stock is filled
  int fds[2];
  ASSERT_EQ(0, ::pipe(fds));
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    unsigned char drawn[16];
    const bool ok = RandomBytes(drawn, sizeof drawn);
    const ssize_t n = ::write(fds[1], drawn, sizeof drawn);
    ::_exit(ok && n == static_cast<ssize_t>(sizeof drawn) ? 0 : 1);
  }
  ::close(fds[1]);
  unsigned char parents[16], childs[16];
  ASSERT_TRUE(RandomBytes(parents, sizeof parents));
  ASSERT_EQ(static_cast<ssize_t>(sizeof childs), ::read(fds[0], childs, sizeof childs));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(child, ::waitpid(child, &status, 0));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(0, std::memcmp(parents, childs, sizeof parents)) << "the child repeated its parent's bytes";
}

TEST(KeysTest, Z85ValidationAndFingerprint) {
  auto keys = GenerateCurveKeyPair();
  EXPECT_TRUE(IsValidZ85Key(keys->public_z85));
  EXPECT_FALSE(IsValidZ85Key(keys->public_z85.substr(1)));
  EXPECT_FALSE(IsValidZ85Key(std::string(40, ' ')));
  std::string raw = DecodeZ85Key(keys->public_z85);
  ASSERT_EQ(32u, raw.size());
  std::string fp = KeyFingerprint(raw);
  EXPECT_EQ(16u, fp.size());
  EXPECT_EQ(fp, KeyFingerprint(raw));
  EXPECT_NE(fp, KeyFingerprint(DecodeZ85Key(GenerateCurveKeyPair()->public_z85)));
  // The fingerprint reveals nothing of the key text itself.
  EXPECT_EQ(std::string::npos, keys->public_z85.find(fp));
}

}  // namespace
}  // namespace liaison
