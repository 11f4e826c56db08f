#include "signing_commands.h"

#include <filesystem>
#include <fstream>
#include <iostream>

#include "policy/signing.h"
#include "policy/trust.h"

namespace liaison::cli {

int DpoKeygen(const std::string& dir, const std::string& name) {
  auto fingerprint = policy::WriteDpoKey(dir, name);
  if (!fingerprint.ok()) {
    std::cerr << "liaison: " << fingerprint.status().message() << "\n";
    return 1;
  }
  const std::string base = (std::filesystem::path(dir) / name).string() + ".dpo";
  std::cout << "wrote " << base << ".key (the DPO's signing key, mode 0600: keep it off the broker) and " << base
            << ".pub\nfingerprint: " << *fingerprint
            << "\nat onboarding the operator puts " << name << ".dpo.pub at policies/dpo-keys/" << name
            << ".pub; the broker pins it\n";
  return 0;
}

int PolicySign(const std::string& file, const std::string& key_file) {
  auto key = policy::LoadDpoPrivateKey(key_file);
  if (!key.ok()) {
    std::cerr << "liaison: " << key.status().message() << "\n";
    return 2;
  }
  auto fingerprint = policy::SignFile(file, key->get());
  if (!fingerprint.ok()) {
    std::cerr << "liaison: " << fingerprint.status().message() << "\n";
    return 1;
  }
  std::cout << "signed " << file << " (" << policy::FileSha256(*policy::ReadFileBytes(file)).substr(0, 16)
            << "...) with DPO key " << *fingerprint << ": " << file << ".sig\n";
  return 0;
}

int PolicyVerify(const std::string& dir, const std::string& pins_file, uint64_t quorum) {
  policy::Pins pins;
  if (!pins_file.empty()) {
    auto loaded = policy::LoadPins(pins_file);
    if (!loaded.ok()) {
      std::cerr << "liaison: " << loaded.status().message() << "\n";
      return 2;
    }
    pins = std::move(*loaded);
  }
  const auto report = policy::CheckPolicySignatures(dir, pins, static_cast<uint32_t>(quorum));
  for (const auto& f : report.files) {
    std::cout << (f.signer.empty() ? "--  " : "ok  ") << f.file << "  sha256 " << f.sha256.substr(0, 16)
              << "  signed by " << (f.signer.empty() ? "nobody valid" : f.signer) << "\n";
  }
  for (const auto& c : report.changes) {
    std::cout << (c.rotated ? "rotation: " : "onboarding: ") << c.agency << " DPO key "
              << (c.rotated ? c.old_fingerprint + " -> " : "") << c.new_fingerprint << "\n";
  }
  for (const auto& p : report.problems) std::cerr << p.message << "\n";
  std::cout << "policy verify: " << (report.ok() ? "OK" : "FAILED") << " ("
            << (pins_file.empty() ? "against the keys in " + dir + "/dpo-keys" : "against the pins in " + pins_file)
            << ", vocabulary quorum " << quorum << ")\n";
  return report.ok() ? 0 : 1;
}

int PolicyRotateKey(const std::string& dir, const std::string& agency, const std::string& old_key_file,
                    const std::string& new_public_key_file) {
  auto old_key = policy::LoadDpoPrivateKey(old_key_file);
  if (!old_key.ok()) {
    std::cerr << "liaison: " << old_key.status().message() << "\n";
    return 2;
  }
  auto new_pub = policy::LoadDpoPublicKey(new_public_key_file);
  if (!new_pub.ok()) {
    std::cerr << "liaison: " << new_pub.status().message() << "\n";
    return 2;
  }
  auto old_pub = policy::RawPublicKey(old_key->get());
  if (!old_pub.ok()) {
    std::cerr << "liaison: " << old_pub.status().message() << "\n";
    return 1;
  }
  const policy::RotationStatement r{agency, policy::DpoFingerprint(*old_pub), *new_pub};
  const auto keys_dir = std::filesystem::path(dir) / "dpo-keys";
  std::error_code ec;
  std::filesystem::create_directories(keys_dir, ec);
  // One file per step, named by the new key, so that a second rotation
  // keeps the first (the broker follows the chain from its pin).
  const std::string path = (keys_dir / (agency + "." + policy::DpoFingerprint(*new_pub) + ".rotation")).string();
  std::ofstream(path, std::ios::trunc) << policy::FormatRotation(r);
  if (!std::ifstream(path)) {
    std::cerr << "liaison: cannot write " << path << "\n";
    return 1;
  }
  auto signed_by = policy::SignFile(path, old_key->get());
  if (!signed_by.ok()) {
    std::cerr << "liaison: " << signed_by.status().message() << "\n";
    return 1;
  }
  std::cout << "wrote " << path << " and its .sig: " << agency << "'s DPO key " << r.old_fingerprint << " -> "
            << policy::DpoFingerprint(*new_pub) << "\nsign " << agency
            << "'s file with the new key; the broker moves the pin when that file goes live\n";
  return 0;
}

}  // namespace liaison::cli
