// Helpers shared by unit and integration tests: temporary folders and a
// registry of example agencies written as real policy files.
#ifndef LIAISON_TESTS_TESTING_FIXTURES_H_
#define LIAISON_TESTS_TESTING_FIXTURES_H_

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "liaison/keys.h"

namespace liaison::testing {

// A fresh folder under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

void WriteText(const std::string& path, const std::string& text);
std::string ReadText(const std::string& path);

struct TestAgency {
  std::string id;
  std::string kind;
  std::string region;
  CurveKeyPair keys;
  // YAML appended to the agency file: its rules. Empty = kAllowEverything.
  std::string rules = {};
};

// Rules that let every message type through whole, both ways: for tests
// about transport and routing rather than policy.
extern const char* const kAllowEverything;

// Writes DIR/vocabulary.yaml and DIR/agencies/<id>.yaml for `agencies`
// (their public keys registered, their rules appended).
void WritePolicies(const std::string& dir, const std::vector<TestAgency>& agencies);

// A test agency with a fresh key pair.
TestAgency MakeAgency(const std::string& id, const std::string& kind, const std::string& region);

// A message of `case_ref` to the agencies `to`: a CaseUpdate whose notes
// are `notes`, or with `erasure` an ErasureRequest withdrawing the case.
std::vector<uint8_t> CaseMessage(const std::string& id, const std::vector<std::string>& to,
                                 const std::string& case_ref = "CASE-1", bool erasure = false,
                                 const std::string& expires_at = "", const std::string& notes = "progress");

// A CaseUpdate to `to` whose milestones vector references one Milestone,
// named by a string of `string_bytes` characters, `references` times
// (shared offsets, legal FlatBuffers): a few hundred KiB that stand for
// references * string_bytes bytes once every reference is followed.
std::vector<uint8_t> SharedOffsetBalloon(const std::string& id, const std::string& to,
                                         size_t string_bytes, size_t references);

// GET http://<endpoint><target> (endpoint "address:port", e.g. the admin
// endpoint a broker logs) on a connection of its own, bounded by 30 s:
// (HTTP status, body), or (0, what failed) if it cannot connect, send or read.
std::pair<int, std::string> HttpGet(const std::string& endpoint, const std::string& target);

}  // namespace liaison::testing

#endif  // LIAISON_TESTS_TESTING_FIXTURES_H_
