#include "liaison/sealing.h"

#include <openssl/evp.h>

#include <climits>

#include "liaison/keys.h"

namespace liaison {
namespace {

constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;
constexpr const char* kKeyCheckText = "liaison store key check v1";
constexpr const char* kKeyCheckAad = "key_check";

// AES-256-GCM fetched once, and one cipher context per thread, reset by each
// Init: OpenSSL 3 looks the algorithm up again (under a lock) for every
// context and every EVP_aes_256_gcm() Init, once per queued copy.
const EVP_CIPHER* Aes256Gcm() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}

EVP_CIPHER_CTX* ThreadContext() {
  struct Owned {
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    ~Owned() { EVP_CIPHER_CTX_free(ctx); }
  };
  thread_local Owned owned;
  return owned.ctx;
}

}  // namespace

std::optional<std::vector<uint8_t>> Seal(const StoreKey& key, const std::string& aad, const uint8_t* data,
                                         size_t size) {
  if (size > static_cast<size_t>(INT32_MAX) || aad.size() > static_cast<size_t>(INT32_MAX)) return std::nullopt;
  std::vector<uint8_t> out(kNonceBytes + size + kTagBytes);
  if (!RandomBytes(out.data(), kNonceBytes)) return std::nullopt;
  EVP_CIPHER_CTX* ctx = ThreadContext();
  const EVP_CIPHER* cipher = Aes256Gcm();
  int len = 0;
  bool ok = ctx && cipher && EVP_EncryptInit_ex(ctx, cipher, nullptr, key.data(), out.data()) == 1 &&
            EVP_EncryptUpdate(ctx, nullptr, &len, reinterpret_cast<const uint8_t*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_EncryptUpdate(ctx, out.data() + kNonceBytes, &len, data, static_cast<int>(size)) == 1 &&
            EVP_EncryptFinal_ex(ctx, out.data() + kNonceBytes + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes, out.data() + kNonceBytes + size) == 1;
  if (!ok) return std::nullopt;
  return out;
}

std::optional<std::vector<uint8_t>> Unseal(const StoreKey& key, const std::string& aad, const uint8_t* sealed,
                                           size_t size) {
  if (size < kNonceBytes + kTagBytes) return std::nullopt;
  const size_t n = size - kNonceBytes - kTagBytes;
  std::vector<uint8_t> out(n);
  EVP_CIPHER_CTX* ctx = ThreadContext();
  const EVP_CIPHER* cipher = Aes256Gcm();
  int len = 0;
  bool ok = ctx && cipher && EVP_DecryptInit_ex(ctx, cipher, nullptr, key.data(), sealed) == 1 &&
            EVP_DecryptUpdate(ctx, nullptr, &len, reinterpret_cast<const uint8_t*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_DecryptUpdate(ctx, out.data(), &len, sealed + kNonceBytes, static_cast<int>(n)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes,
                                const_cast<uint8_t*>(sealed + kNonceBytes + n)) == 1 &&
            EVP_DecryptFinal_ex(ctx, out.data() + len, &len) == 1;
  if (!ok) return std::nullopt;
  return out;
}

std::string CopyAad(const std::string& sender, const std::string& message_id, const std::string& recipient) {
  return sender + '\0' + message_id + '\0' + recipient;
}

std::string CaseHash(const StoreKey& key, const std::string& sender, const std::string& case_ref) {
  unsigned char out[32];
  HmacSha256Pair(key, sender, case_ref, out);
  return std::string(reinterpret_cast<char*>(out), 16);
}

std::optional<std::vector<uint8_t>> SealKeyCheck(const StoreKey& key) {
  const std::string text = kKeyCheckText;
  return Seal(key, kKeyCheckAad, reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

bool KeyCheckOpens(const StoreKey& key, const std::vector<uint8_t>& sealed) {
  auto opened = Unseal(key, kKeyCheckAad, sealed.data(), sealed.size());
  return opened && std::string(opened->begin(), opened->end()) == kKeyCheckText;
}

}  // namespace liaison
