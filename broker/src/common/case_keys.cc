#include "liaison/case_keys.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "liaison/keys.h"

namespace liaison {
namespace {

constexpr const char* kHeader = "liaison-case-key-ring 1";

std::string KekAad(uint64_t epoch) { return std::string("case-kek") + '\0' + std::to_string(epoch); }

std::optional<std::string> HexDecode(const std::string& hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int v = 0;
    for (int j = 0; j < 2; ++j) {
      const char c = hex[2 * i + j];
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else return std::nullopt;
      v = v * 16 + d;
    }
    out[i] = static_cast<char>(v);
  }
  return out;
}

std::string Hex(const std::string& s) { return HexEncode(s.data(), s.size()); }
std::string Hex(const std::vector<uint8_t>& v) { return HexEncode(v.data(), v.size()); }

Status SyncDirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("case-key ring: cannot open " + dir + ": " + std::strerror(errno));
  const bool ok = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return Status::IoError("case-key ring: cannot sync " + dir + ": " + std::strerror(err));
  return Status::Ok();
}

// Overwrites the file's bytes with zeros in place (best effort: a
// journaling or copy-on-write file system, or an SSD, may keep old blocks;
// docs/audit.md says so), so that the replaced ring's KEK does not simply
// stay in a free block.
void ZeroFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    std::vector<char> zeros(static_cast<size_t>(st.st_size), 0);
    if (::pwrite(fd, zeros.data(), zeros.size(), 0) == static_cast<ssize_t>(zeros.size())) (void)::fsync(fd);
  }
  ::close(fd);
}

}  // namespace

std::string CaseKeyAad(const std::string& sender, const std::string& case_hash, uint64_t epoch) {
  return std::string("case-key") + '\0' + sender + '\0' + case_hash + '\0' + std::to_string(epoch);
}

std::optional<std::vector<uint8_t>> WrapCaseKey(const SecretKey32& kek, const std::string& sender,
                                                const std::string& case_hash, uint64_t epoch, const CaseKey& key) {
  return Seal(kek, CaseKeyAad(sender, case_hash, epoch), key.data(), key.size());
}

std::optional<CaseKey> UnwrapCaseKey(const SecretKey32& kek, const std::string& sender, const std::string& case_hash,
                                     uint64_t epoch, const std::vector<uint8_t>& wrapped) {
  auto opened = Unseal(kek, CaseKeyAad(sender, case_hash, epoch), wrapped.data(), wrapped.size());
  if (!opened || opened->size() != 32) return std::nullopt;
  CaseKey key;
  std::memcpy(key.data(), opened->data(), 32);
  OPENSSL_cleanse(opened->data(), opened->size());
  return key;
}

std::string CaseCopyAad(const std::string& sender, const std::string& message_id, const std::string& recipient) {
  return std::string("case-copy") + '\0' + CopyAad(sender, message_id, recipient);
}

std::optional<std::vector<uint8_t>> SealKekCheck(const SecretKey32& kek, uint64_t epoch) {
  const std::string text = "liaison case-key ring check";
  return Seal(kek, "kek-check" + std::to_string(epoch), reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

bool KekCheckOpens(const SecretKey32& kek, uint64_t epoch, const std::vector<uint8_t>& sealed) {
  return Unseal(kek, "kek-check" + std::to_string(epoch), sealed.data(), sealed.size()).has_value();
}

std::optional<std::vector<uint8_t>> OpenCopy(CaseKeyRing* ring, const StoreKey& store_key, const std::string& sender,
                                             const std::string& message_id, const std::string& recipient,
                                             const std::string& case_hash, std::optional<uint64_t> epoch,
                                             const std::vector<uint8_t>& wrapped, const std::vector<uint8_t>& sealed) {
  if (ring) {
    std::optional<CaseKey> key;
    if (epoch) {
      if (auto kek = ring->Kek(*epoch)) key = UnwrapCaseKey(*kek, sender, case_hash, *epoch, wrapped);
    }
    if (!key) {
      if (auto snap = ring->Snapshot(sender, case_hash)) {
        if (auto kek = ring->Kek(snap->first)) key = UnwrapCaseKey(*kek, sender, case_hash, snap->first, snap->second);
      }
    }
    if (key) {
      auto opened = Unseal(*key, CaseCopyAad(sender, message_id, recipient), sealed.data(), sealed.size());
      OPENSSL_cleanse(key->data(), key->size());
      if (opened) return opened;
    }
  }
  return Unseal(store_key, CopyAad(sender, message_id, recipient), sealed.data(), sealed.size());
}

Status CheckRing(CaseKeyRing& ring, const std::string& where,
                 const std::optional<std::pair<uint64_t, std::vector<uint8_t>>>& store_epoch) {
  if (!store_epoch) return Status::Ok();  // no case key yet: the first batch records the ring's epoch
  const auto& [epoch, check] = *store_epoch;
  if (auto kek = ring.Kek(epoch)) {
    if (!KekCheckOpens(*kek, epoch, check)) {
      return Status::PermissionDenied("store " + where + ": the case-key ring " + ring.path() +
                                      " is not this store's (its KEK of epoch " + std::to_string(epoch) +
                                      " does not match): configure the ring that belongs to this store");
    }
    return Status::Ok();
  }
  // A ring past the store's epoch: a restored backup's (its cases open
  // through the ring's snapshot). One behind it cannot open its case keys.
  if (ring.epoch() > epoch) return Status::Ok();
  return Status::PermissionDenied("store " + where + ": its case keys are under epoch " + std::to_string(epoch) +
                                  " and the case-key ring " + ring.path() + " is at epoch " +
                                  std::to_string(ring.epoch()) +
                                  ": it is an older copy or another store's ring; restore the current ring");
}

std::string DefaultCaseKeyRingPath(const std::string& store_key_file) { return store_key_file + ".ring"; }

StatusOr<std::shared_ptr<CaseKeyRing>> CaseKeyRing::Open(const std::string& path, const StoreKey& store_key) {
  std::shared_ptr<CaseKeyRing> ring(new CaseKeyRing(path, store_key));
  std::lock_guard<std::mutex> lock(ring->mutex_);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return Status::IoError("case-key ring " + path + ": " + std::strerror(errno));
    // First use: epoch 1 with a fresh KEK.
    ring->current_ = 1;
    ring->keks_[1] = RandomSecretKey32();
    LIAISON_RETURN_IF_ERROR(ring->WriteLocked());
    return ring;
  }
  LIAISON_RETURN_IF_ERROR(CheckSecretFile(path, "case-key ring " + path,
                                          "restore it from the key backup (it is made at first use, beside its key)"));
  LIAISON_RETURN_IF_ERROR(ring->LoadLocked());
  return ring;
}

Status CaseKeyRing::LoadLocked() {
  std::ifstream in(path_);
  if (!in) return Status::IoError("case-key ring " + path_ + ": cannot read it: " + std::strerror(errno));
  std::string line;
  if (!std::getline(in, line) || line != kHeader) {
    return Status::InvalidArgument("case-key ring " + path_ + ":1: not a case-key ring (expected \"" + kHeader + "\")");
  }
  std::map<uint64_t, SecretKey32> keks;
  std::map<uint64_t, std::map<std::string, std::vector<uint8_t>>> snapshots;
  int number = 1;
  while (std::getline(in, line)) {
    ++number;
    const std::string where = "case-key ring " + path_ + ":" + std::to_string(number);
    std::istringstream fields(line);
    std::string kind;
    uint64_t epoch = 0;
    fields >> kind >> epoch;
    if (kind == "kek") {
      std::string hex;
      fields >> hex;
      auto sealed = HexDecode(hex);
      if (!sealed) return Status::Corruption(where + ": a KEK that is not hex; restore the ring from the key backup");
      auto kek = Unseal(store_key_, KekAad(epoch), reinterpret_cast<const uint8_t*>(sealed->data()), sealed->size());
      if (!kek || kek->size() != 32) {
        return Status::PermissionDenied(where + ": the store key does not match this case-key ring (its KEK of "
                                        "epoch " + std::to_string(epoch) +
                                        " does not open): the wrong store key file, or another store's ring");
      }
      SecretKey32 k;
      std::memcpy(k.data(), kek->data(), 32);
      OPENSSL_cleanse(kek->data(), kek->size());
      keks[epoch] = k;
    } else if (kind == "key") {
      std::string sender, case_hash, wrapped;
      fields >> sender >> case_hash >> wrapped;
      auto s = HexDecode(sender), h = HexDecode(case_hash), w = HexDecode(wrapped);
      if (!s || !h || !w) return Status::Corruption(where + ": a case key that is not hex; restore the ring");
      snapshots[epoch][*s + '\0' + *h] = std::vector<uint8_t>(w->begin(), w->end());
    } else if (!line.empty()) {
      return Status::InvalidArgument(where + ": unknown line (expected kek or key)");
    }
  }
  if (keks.empty()) return Status::Corruption("case-key ring " + path_ + ": holds no KEK; restore it from the key backup");
  keks_ = std::move(keks);
  snapshots_ = std::move(snapshots);
  // The highest epoch is the current one: a staged epoch is only ever newer,
  // and a store that did not commit it settles the ring back (Settle).
  current_ = keks_.rbegin()->first;
  return Status::Ok();
}

Status CaseKeyRing::WriteLocked() {
  std::string text = std::string(kHeader) + "\n";
  for (const auto& [epoch, kek] : keks_) {
    auto sealed = Seal(store_key_, KekAad(epoch), kek.data(), kek.size());
    if (!sealed) return Status::Internal("case-key ring: cannot encrypt (OpenSSL AES-256-GCM or its random source failed)");
    text += "kek " + std::to_string(epoch) + " " + Hex(*sealed) + "\n";
  }
  for (const auto& [epoch, keys] : snapshots_) {
    for (const auto& [id, wrapped] : keys) {
      const size_t zero = id.find('\0');
      text += "key " + std::to_string(epoch) + " " + Hex(id.substr(0, zero)) + " " + Hex(id.substr(zero + 1)) + " " +
              Hex(wrapped) + "\n";
    }
  }
  const std::string tmp = path_ + ".new";
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IoError("case-key ring: cannot create " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Status::IoError("case-key ring: cannot write " + tmp + ": " + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!synced) {
    ::unlink(tmp.c_str());
    return Status::IoError("case-key ring: cannot sync " + tmp + ": " + std::strerror(err));
  }
  ZeroFile(path_);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    return Status::IoError("case-key ring: cannot replace " + path_ + ": " + std::strerror(errno));
  }
  return SyncDirectoryOf(path_);
}

uint64_t CaseKeyRing::epoch() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

std::optional<SecretKey32> CaseKeyRing::Kek(uint64_t epoch) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = keks_.find(epoch);
  if (it != keks_.end()) return it->second;
  // Another process (the broker, while a tool reads) may have rotated it.
  if (epoch > current_ && LoadLocked().ok()) {
    it = keks_.find(epoch);
    if (it != keks_.end()) return it->second;
  }
  return std::nullopt;
}

std::optional<std::pair<uint64_t, std::vector<uint8_t>>> CaseKeyRing::Snapshot(const std::string& sender,
                                                                               const std::string& case_hash) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string id = sender + '\0' + case_hash;
  for (auto e = snapshots_.rbegin(); e != snapshots_.rend(); ++e) {
    if (!keks_.count(e->first)) continue;
    auto it = e->second.find(id);
    if (it != e->second.end()) return std::make_pair(e->first, it->second);
  }
  return std::nullopt;
}

StatusOr<CaseKeyRing::Staged> CaseKeyRing::Stage(const std::map<std::string, CaseKey>& keys) {
  std::lock_guard<std::mutex> lock(mutex_);
  Staged staged;
  staged.epoch = std::max(current_, keks_.empty() ? 0 : keks_.rbegin()->first) + 1;
  staged.kek = RandomSecretKey32();
  for (const auto& [id, key] : keys) {
    const size_t zero = id.find('\0');
    auto wrapped = WrapCaseKey(staged.kek, id.substr(0, zero), id.substr(zero + 1), staged.epoch, key);
    if (!wrapped) return Status::Internal("case-key ring: cannot encrypt (OpenSSL AES-256-GCM or its random source failed)");
    staged.wrapped[id] = std::move(*wrapped);
  }
  // The old epoch's snapshot stays in the file until Retire: a store that
  // does not commit the rotation still has it.
  snapshots_[staged.epoch] = staged.wrapped;
  keks_[staged.epoch] = staged.kek;
  if (Status st = WriteLocked(); !st.ok()) {
    keks_.erase(staged.epoch);
    snapshots_.erase(staged.epoch);
    return st;
  }
  // Readers of this process may meet rows of the new epoch as soon as the
  // store commits: its KEK is held from now on, but new keys stay under the
  // current epoch until Retire.
  return staged;
}

void CaseKeyRing::KeepOnlyLocked(uint64_t epoch) {
  current_ = epoch;
  for (auto it = keks_.begin(); it != keks_.end();) {
    if (it->first != epoch) {
      OPENSSL_cleanse(it->second.data(), it->second.size());
      it = keks_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = snapshots_.begin(); it != snapshots_.end();) {
    it = it->first != epoch ? snapshots_.erase(it) : std::next(it);
  }
}

bool CaseKeyRing::Retire(uint64_t staged) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (staged == 0 && !retire_owed_) return false;
  KeepOnlyLocked(staged != 0 ? staged : current_);
  if (Status st = WriteLocked(); !st.ok()) {
    retire_owed_ = true;
    spdlog::error("event=case_key_ring_retire_failed ring=\"{}\" error=\"{}\" effect=the_previous_kek_is_kept_"
                  "until_a_later_commit_succeeds",
                  path_, st.message());
    return false;
  }
  retire_owed_ = false;
  return staged != 0;
}

void CaseKeyRing::Abandon(uint64_t epoch) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (epoch != current_) {
    keks_.erase(epoch);
    snapshots_.erase(epoch);
  }
  // The file still names the abandoned epoch; Settle drops it at the next
  // writer's first batch, and the next Stage replaces it.
}

Status CaseKeyRing::Settle(uint64_t store_epoch) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!keks_.count(store_epoch)) {
    return Status::PermissionDenied(
        "case-key ring " + path_ + " does not hold the KEK of epoch " + std::to_string(store_epoch) +
        " that the store's case keys are wrapped under: it is another store's ring, or an older copy of this "
        "one; restore the ring that belongs to this store (no case copy opens without it)");
  }
  if (current_ == store_epoch && keks_.size() == 1) return Status::Ok();
  KeepOnlyLocked(store_epoch);
  return WriteLocked();
}

}  // namespace liaison
