// libFuzzer target: loading a policy set in which one agency file is the
// input (what the broker does at start-up and on every reload, with files
// a DPO edits). Whatever the file holds: no crash, no exception escaping,
// and either a loaded set or errors.
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "policy/policy_set.h"

using namespace liaison;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the decisions' log lines, not findings
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const fs::path d = fs::temp_directory_path() / ("liaison-fuzz-policy-" + std::to_string(::getpid()));
    fs::create_directories(d / "agencies");
    fs::copy_file(LIAISON_SOURCE_DIR "/policies/vocabulary.yaml", d / "vocabulary.yaml",
                  fs::copy_options::overwrite_existing);
    fs::copy_file(LIAISON_SOURCE_DIR "/policies/agencies/reintegration-kwale.yaml",
                  d / "agencies" / "reintegration-kwale.yaml", fs::copy_options::overwrite_existing);
    return d.string();
  }();
  {
    std::ofstream out(dir + "/agencies/fuzz-agency.yaml", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::vector<std::string> warnings;
  auto set = policy::PolicySet::Load(dir, "fuzz-secret", &warnings);
  if (!set.ok() && set.status().message().empty()) __builtin_trap();  // an error must say what
  return 0;
}
