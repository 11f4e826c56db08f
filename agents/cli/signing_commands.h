// `liaison policy sign|verify|rotate-key` and `liaison keygen --dpo-key`:
// the DPO's side of signed policy files (docs/policies.md, "Signing").
#ifndef LIAISON_AGENTS_CLI_SIGNING_COMMANDS_H_
#define LIAISON_AGENTS_CLI_SIGNING_COMMANDS_H_

#include <cstdint>
#include <string>

namespace liaison::cli {

int DpoKeygen(const std::string& dir, const std::string& name);
int PolicySign(const std::string& file, const std::string& key_file);
// Checks DIR as the broker would: against `pins_file` (the broker's pinned
// keys) or, without it, against the keys in DIR/dpo-keys/ (onboarding).
int PolicyVerify(const std::string& dir, const std::string& pins_file, uint64_t quorum);
// Writes DIR/dpo-keys/AGENCY.rotation (old key -> new key) signed by the old key.
int PolicyRotateKey(const std::string& dir, const std::string& agency, const std::string& old_key_file,
                    const std::string& new_public_key_file);

}  // namespace liaison::cli

#endif  // LIAISON_AGENTS_CLI_SIGNING_COMMANDS_H_
