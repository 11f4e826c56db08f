// CURVE key pairs and the files that hold them.
//
// A secret key file ("NAME.key") holds the Z85 secret key on one line (lines
// starting with '#' are comments) and must be readable by its owner only
// (mode 0600 or stricter); the public key is derived from it. A public key
// file ("NAME.pub") holds the 40-character Z85 public key.
#ifndef LIAISON_KEYS_H_
#define LIAISON_KEYS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "liaison/status.h"

namespace liaison {

struct CurveKeyPair {
  std::string public_z85;  // 40 characters
  std::string secret_z85;  // 40 characters
};

// A fresh key pair from libzmq (libsodium underneath).
StatusOr<CurveKeyPair> GenerateCurveKeyPair();

// Writes DIR/NAME.key (mode 0600) and DIR/NAME.pub (mode 0644), creating DIR.
// Refuses to overwrite an existing key file.
Status WriteCurveKeyPair(const std::string& dir, const std::string& name,
                         const CurveKeyPair& keys);

// Loads a secret key file and derives its public key. Fails if the file is
// missing, malformed, or readable by group or others.
StatusOr<CurveKeyPair> LoadSecretKeyFile(const std::string& path);

// Loads a public key file; returns the Z85 key.
StatusOr<std::string> LoadPublicKeyFile(const std::string& path);

// Bearer tokens (the HTTPS gateway's client credential): 32 random bytes as
// 64 hex digits, one line, in a file of mode 0600. WriteNewToken refuses to
// overwrite. LoadTokenFile fails if the file is missing, readable by group or
// others, or holds fewer than 32 characters.
StatusOr<std::string> WriteNewToken(const std::string& path);
StatusOr<std::string> LoadTokenFile(const std::string& path);

// 32-byte symmetric secrets (the store key, the pseudonym key): a file of
// mode 0600 holding 64 hex digits on one line ('#' lines are comments).
// `what` names the key in error messages ("store key") and `keygen_flag` is
// the `liaison keygen` option that makes one ("--store-key"), for the hint.
using SecretKey32 = std::array<uint8_t, 32>;
StatusOr<SecretKey32> LoadSecretKey32(const std::string& path, std::string_view what,
                                      std::string_view keygen_flag);
// Writes `key` under a comment line, mode 0600; refuses to overwrite.
Status WriteSecretKey32(const std::string& path, std::string_view comment, const SecretKey32& key);
// 32 bytes from OpenSSL's generator; aborts if it has none.
SecretKey32 RandomSecretKey32();

// The pseudonym key keys every pseudonym the broker makes: the per-recipient
// field pseudonyms (HKDF per recipient) and the ledger's case ids. It is kept
// apart from the broker's CURVE key so that the CURVE key can be rotated
// without changing a single pseudonym. LoadPseudonymKeyFile returns the 32
// raw bytes (the secret DeriveKey takes).
StatusOr<std::string> LoadPseudonymKeyFile(const std::string& path);
// Writes a fresh pseudonym key file; with `from_broker_secret_file` (a CURVE
// secret key file) the key is that key's 32 raw bytes instead, which keeps
// the pseudonyms of brokers that derived them from their CURVE key.
Status WritePseudonymKeyFile(const std::string& path, const std::string& from_broker_secret_file);

// The store key encrypts the broker's queued messages at rest (AES-256-GCM;
// the store takes the 32 bytes). LoadStoreKey reads a store key file;
// WriteStoreKey writes a fresh random one (mode 0600) and refuses to
// overwrite. Here rather than in the store so that `liaison keygen` makes
// one without linking the store.
StatusOr<SecretKey32> LoadStoreKey(const std::string& path);
Status WriteStoreKey(const std::string& path);

// The checks every secret file gets before it is read: it exists, and only
// its owner can read it (no group or other bits). `name` says which file in
// the error ("token file PATH"); `create` is the command that makes one.
Status CheckSecretFile(const std::string& path, const std::string& name, const std::string& create);

// Files that hold case data or secrets are readable by their owner only,
// whatever the umask. MakeOwnerOnlyFile creates `path` empty with mode 0600
// if it does not exist, and takes the group and other bits off an existing
// file (0644 becomes 0600; 0400 stays).
// MakeOwnerOnlySqliteFile does so for a SQLite database and, where present,
// its -wal, -shm and -journal files; SQLite creates those later with the
// database file's mode, so all of them stay 0600. Fails with the path and
// the reason (e.g. a file owned by someone else).
Status MakeOwnerOnlyFile(const std::string& path);
Status MakeOwnerOnlySqliteFile(const std::string& path);

// True if `z85` is a well-formed 40-character Z85 CURVE key.
bool IsValidZ85Key(std::string_view z85);

// Decodes a Z85 key to its 32 raw bytes; empty on error.
std::string DecodeZ85Key(std::string_view z85);

// Lowercase hex of `size` bytes: the one hex encoding for keys, digests,
// pseudonyms and signatures.
std::string HexEncode(const void* data, size_t size);

// HMAC-SHA256 under `key` of a || 0 || b (a field path and its value, a
// sender and its case reference): the one keyed hash for pseudonyms and
// case ids. Keyed contexts are kept per thread and per key (bounded), so a
// call costs the MAC of its input only; aborts if OpenSSL cannot compute it.
void HmacSha256Pair(const std::array<uint8_t, 32>& key, std::string_view a, std::string_view b,
                    unsigned char out[32]);

// Fills `out` with `size` bytes of OpenSSL's CSPRNG; false (and `out`
// untouched) if it fails. Requests of up to 64 bytes (thread references,
// nonces, message ids) are served from a per-thread stock that one
// RAND_bytes call fills with 4 KiB: a call each, with its locking and
// parameter lookups, cost the broker 2% of its CPU. Each byte is handed
// out once and wiped from the stock as it leaves; a process forked after
// a draw refills its stock rather than repeat its parent's bytes.
bool RandomBytes(void* out, size_t size);

// HKDF-SHA256 of `secret` (an empty `salt` is not set, i.e. RFC 5869's
// zeros): the one way liaison derives keys from the broker's secrets.
std::array<uint8_t, 32> DeriveKey(std::string_view secret, std::string_view salt,
                                  std::string_view info);

// A short, non-secret name for a public key in logs: the first 16 hex digits
// of SHA-256 over the 32 raw key bytes.
std::string KeyFingerprint(std::string_view raw_key_32);

}  // namespace liaison

#endif  // LIAISON_KEYS_H_
