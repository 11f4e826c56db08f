#include "policy/signing.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "liaison/keys.h"

namespace liaison::policy {
namespace {

constexpr std::string_view kRotationHeader = "liaison dpo key rotation v1";

std::string Hex(std::string_view raw) { return HexEncode(raw.data(), raw.size()); }

bool Unhex(std::string_view hex, size_t bytes, std::string* out) {
  if (hex.size() != bytes * 2) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int v = 0;
    for (size_t j = i; j < i + 2; ++j) {
      const char c = hex[j];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else return false;
    }
    out->push_back(static_cast<char>(v));
  }
  return true;
}

std::shared_ptr<EVP_PKEY> PublicKeyFromRaw(std::string_view raw) {
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                              reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

// Writes `text` to `path` through a temporary file and a rename, so that a
// reader (the broker's reload) never sees half of it.
Status WriteAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IoError("cannot write " + tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::IoError("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return Status::IoError("cannot read " + path);
  return bytes.str();
}

std::string DpoFingerprint(std::string_view raw_public_key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(raw_public_key.data()), raw_public_key.size(), digest);
  return HexEncode(digest, sizeof digest).substr(0, 16);
}

std::string FileSha256(std::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  return HexEncode(digest, sizeof digest);
}

StatusOr<std::string> RawPublicKey(EVP_PKEY* key) {
  unsigned char raw[32];
  size_t len = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(key, raw, &len) != 1 || len != sizeof raw) {
    return Status::Internal("cannot read the raw Ed25519 public key");
  }
  return std::string(reinterpret_cast<char*>(raw), len);
}

StatusOr<std::string> WriteDpoKey(const std::string& dir, const std::string& name) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create " + dir + ": " + ec.message());
  EVP_PKEY* raw_key = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr);
  const bool made = ctx && EVP_PKEY_keygen_init(ctx) > 0 && EVP_PKEY_keygen(ctx, &raw_key) > 0;
  EVP_PKEY_CTX_free(ctx);
  if (!made) return Status::Internal("cannot make an Ed25519 key (OpenSSL keygen failed)");
  std::shared_ptr<EVP_PKEY> key(raw_key, EVP_PKEY_free);
  const std::string base = (std::filesystem::path(dir) / name).string() + ".dpo";
  int fd = ::open((base + ".key").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Status::IoError("cannot create " + base + ".key: " + std::strerror(errno) +
                           (errno == EEXIST ? " (a DPO key is never overwritten; rotate to a new name)" : ""));
  }
  FILE* f = fdopen(fd, "w");
  if (!f) ::close(fd);
  bool wrote = f && PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (f) wrote = (fflush(f) == 0 && fsync(fileno(f)) == 0 && wrote) & (fclose(f) == 0);
  FILE* pub = fopen((base + ".pub").c_str(), "w");
  bool wrote_pub = pub && PEM_write_PUBKEY(pub, key.get()) == 1;
  if (pub) wrote_pub = (fclose(pub) == 0) && wrote_pub;
  if (!wrote || !wrote_pub) return Status::IoError("cannot write the key files " + base + ".{key,pub}");
  auto raw = RawPublicKey(key.get());
  if (!raw.ok()) return raw.status();
  return DpoFingerprint(*raw);
}

StatusOr<std::shared_ptr<EVP_PKEY>> LoadDpoPrivateKey(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return Status::NotFound("DPO key " + path + ": " + std::strerror(errno) +
                            " (create one with `liaison keygen --dpo-key --out DIR --name AGENCY`)");
  }
  if ((st.st_mode & 077) != 0) {
    return Status::PermissionDenied("DPO key " + path + " is readable by group or others; run `chmod 600 " +
                                    path + "`");
  }
  FILE* f = fopen(path.c_str(), "r");
  EVP_PKEY* key = f ? PEM_read_PrivateKey(f, nullptr, nullptr, nullptr) : nullptr;
  if (f) fclose(f);
  if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(key);
    return Status::InvalidArgument("DPO key " + path + " is not an Ed25519 private key (PEM); make one with "
                                   "`liaison keygen --dpo-key`");
  }
  return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

StatusOr<std::string> LoadDpoPublicKey(const std::string& path) {
  FILE* f = fopen(path.c_str(), "r");
  if (!f) return Status::NotFound("cannot open the DPO public key " + path + ": " + std::strerror(errno));
  EVP_PKEY* key = PEM_read_PUBKEY(f, nullptr, nullptr, nullptr);
  fclose(f);
  std::shared_ptr<EVP_PKEY> owned(key, EVP_PKEY_free);
  if (!key || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
    return Status::InvalidArgument(path + " is not an Ed25519 public key (PEM); the DPO's "
                                   "`liaison keygen --dpo-key` writes NAME.dpo.pub");
  }
  return RawPublicKey(key);
}

StatusOr<std::vector<DpoSignature>> ReadSignatures(const std::string& sig_path) {
  std::vector<DpoSignature> out;
  std::error_code ec;
  if (!std::filesystem::exists(sig_path, ec)) return out;
  auto text = ReadFileBytes(sig_path);
  if (!text.ok()) return text.status();
  std::istringstream lines(*text);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string algorithm, pub_hex, sig_hex, extra;
    words >> algorithm >> pub_hex >> sig_hex;
    DpoSignature sig;
    sig.line = n;
    if (algorithm != "ed25519" || !Unhex(pub_hex, 32, &sig.public_key) || !Unhex(sig_hex, 64, &sig.signature) ||
        (words >> extra)) {
      return Status::InvalidArgument(sig_path + ":" + std::to_string(n) +
                                     ": not a signature line (\"ed25519 <public key hex> <signature hex>\"); "
                                     "re-create it with `liaison policy sign`");
    }
    out.push_back(std::move(sig));
  }
  return out;
}

bool VerifySignature(std::string_view bytes, const DpoSignature& sig) {
  auto key = PublicKeyFromRaw(sig.public_key);
  if (!key) return false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) return false;
  const bool ok =
      EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, key.get()) == 1 &&
      EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.signature.data()), sig.signature.size(),
                       reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

StatusOr<std::string> SignFile(const std::string& file, EVP_PKEY* key) {
  auto bytes = ReadFileBytes(file);
  if (!bytes.ok()) return bytes.status();
  auto pub = RawPublicKey(key);
  if (!pub.ok()) return pub.status();
  unsigned char sig[64];
  size_t sig_len = sizeof sig;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const bool signed_ok =
      ctx && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, key) == 1 &&
      EVP_DigestSign(ctx, sig, &sig_len, reinterpret_cast<const unsigned char*>(bytes->data()), bytes->size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!signed_ok || sig_len != sizeof sig) return Status::Internal("cannot sign " + file + " (OpenSSL)");
  const std::string sig_path = file + ".sig";
  auto existing = ReadSignatures(sig_path);
  if (!existing.ok()) return existing.status();
  std::string text;
  for (const auto& other : *existing) {
    if (other.public_key == *pub) continue;  // this key's earlier signature: replaced
    text += "ed25519 " + Hex(other.public_key) + " " + Hex(other.signature) + "\n";
  }
  text += "ed25519 " + Hex(*pub) + " " + Hex(std::string_view(reinterpret_cast<char*>(sig), sig_len)) + "\n";
  if (auto st = WriteAtomically(sig_path, text); !st.ok()) return st;
  return DpoFingerprint(*pub);
}

std::string FormatRotation(const RotationStatement& r) {
  return std::string(kRotationHeader) + "\nagency: " + r.agency + "\nold: " + r.old_fingerprint +
         "\nnew: " + Hex(r.new_public_key) + "\n";
}

StatusOr<RotationStatement> ParseRotation(std::string_view text, const std::string& where) {
  std::istringstream lines{std::string(text)};
  std::string header, agency, old_fp, new_hex;
  std::getline(lines, header);
  std::getline(lines, agency);
  std::getline(lines, old_fp);
  std::getline(lines, new_hex);
  RotationStatement r;
  auto value = [](const std::string& line, std::string_view key, std::string* out) {
    if (line.rfind(std::string(key) + ": ", 0) != 0) return false;
    *out = line.substr(key.size() + 2);
    return !out->empty();
  };
  std::string new_pub_hex;
  if (header != kRotationHeader || !value(agency, "agency", &r.agency) || !value(old_fp, "old", &r.old_fingerprint) ||
      !value(new_hex, "new", &new_pub_hex) || !Unhex(new_pub_hex, 32, &r.new_public_key)) {
    return Status::InvalidArgument(where + ": not a rotation statement; write one with `liaison policy rotate-key`");
  }
  return r;
}

}  // namespace liaison::policy
