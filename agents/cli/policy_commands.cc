#include "policy_commands.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "explain/explain.h"
#include "explain/policy_tests.h"
#include "liaison/keys.h"
#include "policy/policy_lint.h"

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

}  // namespace

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
