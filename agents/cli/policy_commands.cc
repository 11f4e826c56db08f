#include "policy_commands.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "explain/explain.h"
#include "explain/policy_tests.h"
#include "liaison/keys.h"
#include "policy/policy_lint.h"
#include "policy/trust.h"

namespace liaison::cli {
namespace {

using policy::PolicySet;

// Without the broker's pseudonym key, pseudonyms are computed under a fixed stand-in
// secret: the same shape, but not the tokens the live broker would produce.
constexpr std::string_view kStandInSecret = "liaison policy tools: not the broker's secret";

StatusOr<std::shared_ptr<const PolicySet>> Load(const std::string& dir, std::string_view secret,
                                                bool print_warnings) {
  // explain and test run the broker's admission, which logs its events
  // (event=denied, event=break_glass): a simulation is not one, and the
  // output is the explanation alone.
  spdlog::set_level(spdlog::level::off);
  std::vector<std::string> warnings;
  auto set = PolicySet::Load(dir, secret, &warnings);
  if (print_warnings) {
    for (const auto& w : warnings) std::cerr << "warning: " << w << "\n";
  }
  return set;
}

namespace fs = std::filesystem;

// The checks a broker makes when it loads `dir`: the set compiles, and with
// `pins_file` every file is signed by its agency's pinned DPO key. Empty if
// it passes, else what is wrong.
std::string CheckAsBrokerLoads(const std::string& dir, const std::string& pins_file, uint64_t quorum,
                               std::string* version) {
  auto set = Load(dir, kStandInSecret, /*print_warnings=*/false);
  if (!set.ok()) return set.status().message();
  *version = (*set)->version();
  if (pins_file.empty()) return "";
  auto pins = policy::LoadPins(pins_file);
  if (!pins.ok()) return pins.status().message();
  const auto report = policy::CheckPolicySignatures(dir, *pins, static_cast<uint32_t>(quorum));
  std::string problems;
  for (const auto& p : report.problems) problems += (problems.empty() ? "" : "\n") + p.message;
  return problems;
}

// fsyncs `path` (a file or a folder).
Status SyncPath(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("cannot open " + path.string() + ": " + std::strerror(errno));
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Status::IoError("cannot sync " + path.string() + ": " + std::strerror(errno));
  return Status::Ok();
}

// Copies the folder `from` to the new folder `to`, every file and folder
// synced, so that what is renamed into place is on disk first.
Status CopyTree(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy(from, to, fs::copy_options::recursive, ec);
  if (ec) return Status::IoError("cannot copy " + from.string() + " to " + to.string() + ": " + ec.message());
  for (auto it = fs::recursive_directory_iterator(to, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    LIAISON_RETURN_IF_ERROR(SyncPath(it->path()));
  }
  if (ec) return Status::IoError("cannot read " + to.string() + ": " + ec.message());
  return SyncPath(to);
}

}  // namespace

int PolicyInstall(const std::string& staged, const std::string& live, const std::string& pins_file,
                  uint64_t quorum) {
  std::error_code ec;
  fs::path live_path = fs::absolute(live, ec).lexically_normal();
  if (live_path.filename().empty()) live_path = live_path.parent_path();  // "policies/"
  const fs::path staged_path = fs::absolute(staged, ec).lexically_normal();
  if (!fs::is_directory(staged_path, ec)) {
    std::cerr << "policy install: " << staged << " is not a folder\n";
    return 2;
  }
  if (fs::equivalent(staged_path, live_path, ec)) {
    std::cerr << "policy install: " << staged << " and " << live << " are the same folder: stage changes in a copy\n";
    return 2;
  }
  const bool live_exists = fs::exists(fs::symlink_status(live_path, ec));
  if (live_exists && (fs::is_symlink(fs::symlink_status(live_path, ec)) || !fs::is_directory(live_path, ec))) {
    std::cerr << "policy install: " << live << " is not a folder (a symlink is not replaced: give its target)\n";
    return 2;
  }
  auto refuse = [&](const std::string& why) {
    std::cerr << why << "\npolicy install: REFUSED; " << live << " is unchanged\n";
    return 1;
  };
  // Checked in place first, so that errors name the staged files.
  std::string version;
  if (std::string problems = CheckAsBrokerLoads(staged_path, pins_file, quorum, &version); !problems.empty()) {
    return refuse(problems);
  }
  // The copy beside LIVE (same file system, so the rename is one step) is
  // what goes live: it is checked again, in case STAGED changed meanwhile.
  const fs::path temp = live_path.parent_path() / ("." + live_path.filename().string() + ".install-" +
                                                   std::to_string(::getpid()));
  fs::remove_all(temp, ec);
  if (Status st = CopyTree(staged_path, temp); !st.ok()) {
    fs::remove_all(temp, ec);
    return refuse(st.message());
  }
  std::string copied_version;
  if (!CheckAsBrokerLoads(temp, pins_file, quorum, &copied_version).empty() || copied_version != version) {
    fs::remove_all(temp, ec);
    return refuse(staged + " changed while it was being installed: run the review and the install again");
  }
  if (live_exists) {
    fs::permissions(temp, fs::status(live_path, ec).permissions(), ec);
    if (::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, live_path.c_str(), RENAME_EXCHANGE) != 0) {
      const std::string why = std::strerror(errno);
      fs::remove_all(temp, ec);
      return refuse("cannot exchange " + live + " with its new version: " + why);
    }
  } else if (::rename(temp.c_str(), live_path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    fs::remove_all(temp, ec);
    return refuse("cannot move the new set to " + live + ": " + why);
  }
  if (Status st = SyncPath(live_path.parent_path()); !st.ok()) std::cerr << "warning: " << st.message() << "\n";
  // `temp` now holds the set that was live.
  if (live_exists) fs::remove_all(temp, ec);
  std::cout << "policy install: OK: " << live << " is now policy version " << version
            << (pins_file.empty() ? "" : " (signatures checked against " + pins_file + ")")
            << "; a running broker reloads it within seconds (liaison status shows its policy version)\n";
  return 0;
}

int PolicyCheck(const std::string& dir) {
  auto set = Load(dir, kStandInSecret, /*print_warnings=*/true);
  if (!set.ok()) {
    std::cerr << set.status().message() << "\n";
    std::cerr << "policy check: FAILED; the broker keeps running its last good policy set\n";
    return 1;
  }
  size_t rules = 0;
  for (const auto& a : (*set)->directory().agencies()) {
    rules += (*set)->For(a).release.size() + (*set)->For(a).accept.size();
    for (const auto& w : policy::LintPolicy((*set)->For(a))) std::cerr << "warning: " << w << "\n";
  }
  std::cout << "policy check: OK: " << (*set)->directory().agencies().size() << " agencies, "
            << rules << " rules, version " << (*set)->version() << "\n";
  return 0;
}

int PolicyExplain(const std::string& dir, const std::string& from, const std::string& to,
                  const std::string& message_file, const std::string& pseudonym_key_file,
                  bool json) {
  std::string secret(kStandInSecret);
  if (!pseudonym_key_file.empty()) {
    auto key = LoadPseudonymKeyFile(pseudonym_key_file);
    if (!key.ok()) {
      std::cerr << key.status().message() << "\n";
      return 2;
    }
    secret = *key;
  }
  auto set = Load(dir, secret, /*print_warnings=*/false);
  if (!set.ok()) {
    std::cerr << set.status().message() << "\n";
    return 1;
  }
  const auto* sender = (*set)->directory().Find(from);
  const auto* recipient = (*set)->directory().Find(to);
  if (!sender || !recipient) {
    std::cerr << "no agency '" << (sender ? to : from) << "' in " << dir << "/agencies\n";
    return 2;
  }
  std::ifstream in(message_file);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) {
    std::cerr << "cannot read " << message_file << "\n";
    return 2;
  }
  wire::JsonCodec codec(wire::JsonCodec::Root::kEnvelope);
  auto binary = codec.ToBinary(text.str(), message_file);
  if (!binary.ok()) {
    std::cerr << binary.status().message() << "\n";
    return 2;
  }
  auto e = policy::Explain(**set, *sender, *recipient, *binary);
  if (!e.ok()) {
    std::cerr << e.status().message() << "\n";
    return 2;
  }
  const bool broker_key = !pseudonym_key_file.empty();
  if (json) {
    const auto buffer = policy::BuildExplanation(*e, (*set)->version(), broker_key);
    auto out = wire::JsonCodec(wire::JsonCodec::Root::kPolicyExplanation)
                   .ToJson({buffer.data(), buffer.size()}, /*pretty=*/true);
    if (!out.ok()) {
      std::cerr << out.status().message() << "\n";
      return 2;
    }
    std::cout << *out << "\n";
    return 0;
  }
  std::cout << policy::FormatExplanation(*e, *wire::VerifyEnvelope(*binary));
  if (e->released()) {
    auto received = codec.ToJson(e->received, /*pretty=*/true);
    std::cout << "what " << to << " receives"
              << (broker_key ? "" : " (pseudonyms under a stand-in key; pass --pseudonym-key for "
                                    "the broker's)")
              << ":\n"
              << (received.ok() ? *received : received.status().message()) << "\n";
  }
  return 0;
}

int PolicyTest(const std::string& dir) {
  auto set = Load(dir, kStandInSecret, /*print_warnings=*/false);
  if (!set.ok()) {
    std::cerr << set.status().message() << "\npolicy test: the policy set does not load\n";
    return 1;
  }
  const std::string tests_dir = (std::filesystem::path(dir) / "tests").string();
  auto results = policy::RunPolicyTests(**set, tests_dir);
  if (!results.ok()) {
    std::cerr << results.status().message() << "\n";
    return 2;
  }
  int failed = 0;
  for (const auto& r : *results) {
    if (r.passed) {
      std::cout << "PASS  " << r.name << "\n";
    } else {
      ++failed;
      std::cout << "FAIL  " << r.name << "  (" << r.where << ")\n      " << r.failure << "\n";
    }
  }
  std::cout << "policy test: " << results->size() - failed << " passed, " << failed << " failed\n";
  return failed == 0 && !results->empty() ? 0 : 1;
}

}  // namespace liaison::cli
