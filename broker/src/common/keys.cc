#include "liaison/keys.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/kdf.h>
#include <openssl/sha.h>
#include <fcntl.h>
#include <pthread.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

namespace liaison {
namespace {

// Reads the first non-comment, non-blank line of a key file.
StatusOr<std::string> ReadKeyLine(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return Status::NotFound("cannot open key file " + path + ": " + std::strerror(errno));
  }
  std::string line;
  while (std::getline(in, line)) {
    auto start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos || line[start] == '#') continue;
    auto end = line.find_last_not_of(" \t\r");
    return line.substr(start, end - start + 1);
  }
  return Status::InvalidArgument("key file " + path + " holds no key");
}

Status WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, mode);
  if (fd < 0) {
    return Status::IoError("cannot create " + path + ": " + std::strerror(errno) +
                           (errno == EEXIST ? " (remove it first to replace the key)" : ""));
  }
  ssize_t n = ::write(fd, text.data(), text.size());
  int write_errno = errno;
  if (::fsync(fd) != 0 || ::close(fd) != 0 || n != static_cast<ssize_t>(text.size())) {
    return Status::IoError("cannot write " + path + ": " + std::strerror(write_errno));
  }
  return Status::Ok();
}

}  // namespace

Status CheckSecretFile(const std::string& path, const std::string& name, const std::string& create) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return Status::NotFound(name + ": " + std::strerror(errno) + " (create one with `" + create + "`)");
  }
  if ((st.st_mode & 077) != 0) {
    return Status::PermissionDenied(name + " is readable by group or others; run `chmod 600 " + path + "`");
  }
  return Status::Ok();
}

Status MakeOwnerOnlyFile(const std::string& path) {
  // open() applies the umask when it creates, so the mode is set with
  // fchmod: exactly 0600 for a new file; for an existing one (an older
  // version made it 0644) only the group and other bits go, so that an
  // operator's stricter 0400 stays.
  //
  // An existing file is changed by path, never opened: closing any
  // descriptor of a file drops every POSIX lock this process holds on it,
  // and SQLite's locks on a store (and its -shm) that another connection of
  // this process has open would go with it; another process could then
  // truncate the -shm under the broker's mapping (SIGBUS).
  struct stat existing;
  if (::stat(path.c_str(), &existing) == 0) {
    if ((existing.st_mode & 077) != 0 && ::chmod(path.c_str(), existing.st_mode & 0700) != 0) {
      return Status::IoError("cannot make " + path + " readable by its owner only (chmod 600): " +
                             std::strerror(errno) + " (is it owned by another user?)");
    }
    return Status::Ok();
  }
  bool created = true;
  int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) {
    created = false;
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) {
    return Status::IoError("cannot create or open " + path + ": " + std::strerror(errno) +
                           " (check the folder exists and is writable)");
  }
  struct stat st;
  bool ok = ::fstat(fd, &st) == 0;
  if (ok && (created || (st.st_mode & 077) != 0)) {
    ok = ::fchmod(fd, created ? 0600 : (st.st_mode & 0700)) == 0;
  }
  const int chmod_errno = errno;
  ::close(fd);
  if (!ok) {
    return Status::IoError("cannot make " + path + " readable by its owner only (chmod 600): " +
                           std::strerror(chmod_errno) + " (is it owned by another user?)");
  }
  return Status::Ok();
}

Status MakeOwnerOnlySqliteFile(const std::string& path) {
  // In-memory and URI databases have no file of that name.
  if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) return Status::Ok();
  LIAISON_RETURN_IF_ERROR(MakeOwnerOnlyFile(path));
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    const std::string side = path + suffix;
    if (::access(side.c_str(), F_OK) == 0) LIAISON_RETURN_IF_ERROR(MakeOwnerOnlyFile(side));
  }
  return Status::Ok();
}

bool IsValidZ85Key(std::string_view z85) {
  if (z85.size() != 40) return false;
  uint8_t raw[32];
  std::string copy(z85);
  return zmq_z85_decode(raw, copy.c_str()) != nullptr;
}

std::string DecodeZ85Key(std::string_view z85) {
  if (!IsValidZ85Key(z85)) return {};
  uint8_t raw[32];
  std::string copy(z85);
  zmq_z85_decode(raw, copy.c_str());
  return std::string(reinterpret_cast<char*>(raw), 32);
}

std::string HexEncode(const void* data, size_t size) {
  static const char* kHex = "0123456789abcdef";
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::string out(2 * size, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return out;
}

namespace {

// HMAC-SHA256 contexts per thread, one per recipient key, keyed once. The
// one-shot HMAC() fetches the algorithm and hashes the key pads on every
// call, which costs more than the MAC of a short field itself; a keyed
// context re-initialised with a NULL key reuses its pads.
class ThreadHmac {
 public:
  ThreadHmac() {
    mac_ = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (!mac_) std::abort();
  }
  ~ThreadHmac() {
    Clear();
    EVP_MAC_free(mac_);
  }
  void Mac(const std::array<uint8_t, 32>& key, std::string_view a, std::string_view b,
           unsigned char out[32]) {
    static const unsigned char kZero = 0;
    EVP_MAC_CTX* ctx = ContextFor(key);
    size_t len = 0;
    if (EVP_MAC_init(ctx, nullptr, 0, nullptr) != 1 ||
        EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(a.data()), a.size()) != 1 ||
        EVP_MAC_update(ctx, &kZero, 1) != 1 ||
        EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(b.data()), b.size()) != 1 ||
        EVP_MAC_final(ctx, out, &len, 32) != 1) {
      std::abort();  // OpenSSL cannot compute HMAC-SHA256: nothing sensible to do
    }
  }

 private:
  // Bounded: a reload derives new keys, and old ones must not pile up.
  static constexpr size_t kMaxContexts = 4096;

  EVP_MAC_CTX* ContextFor(const std::array<uint8_t, 32>& key) {
    const std::string id(reinterpret_cast<const char*>(key.data()), key.size());
    auto it = contexts_.find(id);
    if (it != contexts_.end()) return it->second;
    if (contexts_.size() >= kMaxContexts) Clear();
    EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac_);
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                                 OSSL_PARAM_construct_end()};
    if (!ctx || EVP_MAC_init(ctx, key.data(), key.size(), params) != 1) std::abort();
    contexts_.emplace(id, ctx);
    return ctx;
  }
  void Clear() {
    for (auto& [id, ctx] : contexts_) EVP_MAC_CTX_free(ctx);
    contexts_.clear();
  }

  EVP_MAC* mac_ = nullptr;
  std::unordered_map<std::string, EVP_MAC_CTX*> contexts_;
};

}  // namespace

void HmacSha256Pair(const std::array<uint8_t, 32>& key, std::string_view a, std::string_view b,
                    unsigned char out[32]) {
  thread_local ThreadHmac hmac;
  hmac.Mac(key, a, b, out);
}

namespace {
// Counts fork()s: a child inherits its parent's stock of random bytes, and
// must not hand out the same bytes (message ids, nonces) as the parent.
std::atomic<uint64_t> g_forks{0};
}  // namespace

bool RandomBytes(void* out, size_t size) {
  constexpr size_t kStocked = 64;
  if (size == 0) return true;
  static const bool fork_aware =
      ::pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1, std::memory_order_relaxed); }) == 0;
  if (size > kStocked || !fork_aware) {
    return size <= INT_MAX && RAND_bytes(static_cast<unsigned char*>(out), static_cast<int>(size)) == 1;
  }
  struct Stock {
    unsigned char bytes[4096];
    size_t used = sizeof bytes;
    uint64_t forks = 0;  // g_forks when it was filled
    ~Stock() { OPENSSL_cleanse(bytes, sizeof bytes); }
  };
  thread_local Stock stock;
  if (stock.forks != g_forks.load(std::memory_order_relaxed)) stock.used = sizeof stock.bytes;
  if (stock.used + size > sizeof stock.bytes) {
    stock.forks = g_forks.load(std::memory_order_relaxed);
    if (RAND_bytes(stock.bytes, sizeof stock.bytes) != 1) {
      stock.used = sizeof stock.bytes;
      return false;
    }
    stock.used = 0;
  }
  std::memcpy(out, stock.bytes + stock.used, size);
  OPENSSL_cleanse(stock.bytes + stock.used, size);
  stock.used += size;
  return true;
}

std::array<uint8_t, 32> DeriveKey(std::string_view secret, std::string_view salt,
                                  std::string_view info) {
  auto bytes = [](std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); };
  std::array<uint8_t, 32> key{};
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  size_t len = key.size();
  const bool ok =
      ctx && EVP_PKEY_derive_init(ctx) > 0 && EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) > 0 &&
      (salt.empty() || EVP_PKEY_CTX_set1_hkdf_salt(ctx, bytes(salt), static_cast<int>(salt.size())) > 0) &&
      EVP_PKEY_CTX_set1_hkdf_key(ctx, bytes(secret), static_cast<int>(secret.size())) > 0 &&
      EVP_PKEY_CTX_add1_hkdf_info(ctx, bytes(info), static_cast<int>(info.size())) > 0 &&
      EVP_PKEY_derive(ctx, key.data(), &len) > 0;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) std::abort();  // OpenSSL without HKDF: nothing sensible to do
  return key;
}

std::string KeyFingerprint(std::string_view raw_key_32) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(raw_key_32.data()), raw_key_32.size(), digest);
  return HexEncode(digest, 8);
}

StatusOr<CurveKeyPair> GenerateCurveKeyPair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Status::Internal(std::string("zmq_curve_keypair failed: ") + zmq_strerror(zmq_errno()) +
                            " (is libzmq built with CURVE support?)");
  }
  return CurveKeyPair{pub, sec};
}

Status WriteCurveKeyPair(const std::string& dir, const std::string& name,
                         const CurveKeyPair& keys) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create directory " + dir + ": " + ec.message());
  const std::string base = (std::filesystem::path(dir) / name).string();
  LIAISON_RETURN_IF_ERROR(WriteFile(
      base + ".key",
      "# liaison CURVE secret key of " + name + ". Keep it secret: mode 0600, never share.\n" +
          keys.secret_z85 + "\n",
      0600));
  return WriteFile(base + ".pub",
                   "# liaison CURVE public key of " + name + ". Give this one to the broker operator.\n" +
                       keys.public_z85 + "\n",
                   0644);
}

StatusOr<CurveKeyPair> LoadSecretKeyFile(const std::string& path) {
  LIAISON_RETURN_IF_ERROR(CheckSecretFile(path, "secret key file " + path, "liaison keygen"));
  auto line = ReadKeyLine(path);
  if (!line.ok()) return line.status();
  if (!IsValidZ85Key(*line)) {
    return Status::InvalidArgument("secret key file " + path +
                                   " does not hold a 40-character Z85 key");
  }
  char pub[41];
  if (zmq_curve_public(pub, line->c_str()) != 0) {
    return Status::InvalidArgument("secret key file " + path + ": cannot derive the public key");
  }
  return CurveKeyPair{pub, *line};
}

StatusOr<std::string> WriteNewToken(const std::string& path) {
  uint8_t raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1) return Status::Internal("no randomness for a token");
  std::string token = HexEncode(raw, sizeof raw);
  OPENSSL_cleanse(raw, sizeof raw);
  LIAISON_RETURN_IF_ERROR(WriteFile(path, token + "\n", 0600));
  return token;
}

StatusOr<std::string> LoadTokenFile(const std::string& path) {
  LIAISON_RETURN_IF_ERROR(CheckSecretFile(path, "token file " + path, "liaison keygen --token FILE"));
  auto line = ReadKeyLine(path);
  if (!line.ok()) return line.status();
  if (line->size() < 32) {
    return Status::InvalidArgument("token file " + path +
                                   " holds fewer than 32 characters; make a new one with "
                                   "`liaison keygen --token FILE`");
  }
  return *line;
}

StatusOr<SecretKey32> LoadSecretKey32(const std::string& path, std::string_view what,
                                      std::string_view keygen_flag) {
  const std::string name = std::string(what) + " file " + path;
  LIAISON_RETURN_IF_ERROR(
      CheckSecretFile(path, name, "liaison keygen " + std::string(keygen_flag) + " " + path));
  auto line = ReadKeyLine(path);
  if (!line.ok()) return line.status();
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  SecretKey32 key{};
  bool ok = line->size() == 2 * key.size();
  for (size_t i = 0; ok && i < key.size(); ++i) {
    const int hi = nibble((*line)[2 * i]), lo = nibble((*line)[2 * i + 1]);
    ok = hi >= 0 && lo >= 0;
    key[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  if (!ok) return Status::InvalidArgument(name + " must hold 64 hex digits (32 bytes) on one line");
  return key;
}

Status WriteSecretKey32(const std::string& path, std::string_view comment, const SecretKey32& key) {
  std::string text = "# " + std::string(comment) + "\n" + HexEncode(key.data(), key.size()) + "\n";
  Status st = WriteFile(path, text, 0600);
  OPENSSL_cleanse(text.data(), text.size());
  return st;
}

SecretKey32 RandomSecretKey32() {
  SecretKey32 key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) std::abort();  // no randomness: stop
  return key;
}

StatusOr<std::string> LoadPseudonymKeyFile(const std::string& path) {
  auto key = LoadSecretKey32(path, "pseudonym key", "--pseudonym-key");
  if (!key.ok()) return key.status();
  return std::string(reinterpret_cast<const char*>(key->data()), key->size());
}

Status WritePseudonymKeyFile(const std::string& path, const std::string& from_broker_secret_file) {
  SecretKey32 key = RandomSecretKey32();
  if (!from_broker_secret_file.empty()) {
    auto curve = LoadSecretKeyFile(from_broker_secret_file);
    if (!curve.ok()) return curve.status();
    std::string raw = DecodeZ85Key(curve->secret_z85);
    std::copy(raw.begin(), raw.end(), key.begin());
    OPENSSL_cleanse(raw.data(), raw.size());
  }
  Status st = WriteSecretKey32(
      path, "liaison pseudonym key: keys every pseudonym the broker makes. Keep secret; back it up.", key);
  OPENSSL_cleanse(key.data(), key.size());
  return st;
}

StatusOr<SecretKey32> LoadStoreKey(const std::string& path) {
  return LoadSecretKey32(path, "store key", "--store-key");
}

Status WriteStoreKey(const std::string& path) {
  return WriteSecretKey32(
      path, "liaison store key (AES-256-GCM at rest). Keep secret; back it up with the store.",
      RandomSecretKey32());
}

StatusOr<std::string> LoadPublicKeyFile(const std::string& path) {
  auto line = ReadKeyLine(path);
  if (!line.ok()) return line.status();
  if (!IsValidZ85Key(*line)) {
    return Status::InvalidArgument("public key file " + path +
                                   " does not hold a 40-character Z85 key");
  }
  return *line;
}

}  // namespace liaison
