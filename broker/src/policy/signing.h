// DPO signatures on policy files (docs/policies.md, "Signing").
//
// A data-protection officer's key is an Ed25519 key pair (PEM). A policy
// file FILE is signed by a detached signature file FILE.sig beside it, over
// the file's exact bytes; FILE.sig holds one line per signer:
//
//   ed25519 <public key, 64 hex digits> <signature, 128 hex digits>
//
// (the vocabulary carries the lines of several agencies' DPOs). A key is
// named by its fingerprint: the first 16 hex digits of SHA-256 over the raw
// public key. A rotation statement (AGENCY.rotation, signed like a policy
// file by the old key) names the agency, the old key's fingerprint and the
// new public key.
//
// Nothing here decides whom to trust: policy/trust.h does, from pinned keys.
#ifndef LIAISON_BROKER_POLICY_SIGNING_H_
#define LIAISON_BROKER_POLICY_SIGNING_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "liaison/status.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace liaison::policy {

// Writes DIR/NAME.dpo.key (secret, mode 0600, refuses to overwrite) and
// DIR/NAME.dpo.pub (PEM); returns the new key's fingerprint.
StatusOr<std::string> WriteDpoKey(const std::string& dir, const std::string& name);
// A DPO private key file (PEM, Ed25519, mode 0600).
StatusOr<std::shared_ptr<EVP_PKEY>> LoadDpoPrivateKey(const std::string& path);
// A DPO public key file (PEM, Ed25519): its raw 32 bytes.
StatusOr<std::string> LoadDpoPublicKey(const std::string& path);
// The raw public key of a private key.
StatusOr<std::string> RawPublicKey(EVP_PKEY* key);
// First 16 hex digits of SHA-256 over the raw public key.
std::string DpoFingerprint(std::string_view raw_public_key);
// Full hex SHA-256 of `bytes`: a policy file's hash in the ledger.
std::string FileSha256(std::string_view bytes);

// One signer's line of a .sig file.
struct DpoSignature {
  std::string public_key;  // raw, 32 bytes
  std::string signature;   // raw, 64 bytes
  int line = 0;
  std::string fingerprint() const { return DpoFingerprint(public_key); }
};

// The signatures of FILE.sig (none if it does not exist). A malformed line
// is an error naming sig_path:line.
StatusOr<std::vector<DpoSignature>> ReadSignatures(const std::string& sig_path);
// True if `sig` is a valid Ed25519 signature of `bytes` by its public key.
bool VerifySignature(std::string_view bytes, const DpoSignature& sig);
// Signs the exact bytes of `file` with `key` and writes FILE.sig, keeping
// the other signers' lines (replacing this key's own). Returns the
// fingerprint.
StatusOr<std::string> SignFile(const std::string& file, EVP_PKEY* key);

struct RotationStatement {
  std::string agency;
  std::string old_fingerprint;
  std::string new_public_key;  // raw, 32 bytes
};
// The text of a statement (what the old key signs).
std::string FormatRotation(const RotationStatement& r);
StatusOr<RotationStatement> ParseRotation(std::string_view text, const std::string& where);

// Reads a whole file; NotFound / IoError name the path.
StatusOr<std::string> ReadFileBytes(const std::string& path);

}  // namespace liaison::policy

#endif  // LIAISON_BROKER_POLICY_SIGNING_H_
