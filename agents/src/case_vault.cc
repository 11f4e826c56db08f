#include "liaison/case_vault.h"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "liaison/keys.h"
#include "liaison/sealing.h"
#include "liaison/sqlite_statement.h"

namespace liaison {
namespace {

constexpr const char* kSchema =
    // Each case's key, wrapped under the ring's KEK of `epoch`; deleted to
    // shred the case. `meta` holds the key check and the ring's epoch.
    // `key_check` (a known text sealed under the case key) tells a restored
    // copy's key from the one the case got anew after an erasure.
    "CREATE TABLE IF NOT EXISTS case_keys (sender TEXT NOT NULL, case_id BLOB NOT NULL,"
    " epoch INTEGER NOT NULL, wrapped BLOB NOT NULL, key_check BLOB NOT NULL, PRIMARY KEY (sender, case_id));"
    "CREATE TABLE IF NOT EXISTS vault_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);";

std::string RowAad(const std::string& sender, const std::string& row) {
  return std::string("case-row") + '\0' + sender + '\0' + row;
}

StatusOr<SecretKey32> LoadOrMakeKey(const CaseVault::Files& files) {
  struct stat st {};
  if (::stat(files.key_file.c_str(), &st) != 0) {
    if (errno != ENOENT) return Status::IoError(files.what + " file " + files.key_file + ": " + std::strerror(errno));
    // First use. Another process making it at the same moment wins; then
    // its key is loaded below.
    const SecretKey32 key = RandomSecretKey32();
    Status written = WriteSecretKey32(files.key_file,
                                      "liaison " + files.what +
                                          " (AES-256-GCM of the case-key ring beside it). Keep secret; back it up "
                                          "apart from the data it protects.",
                                      key);
    if (!written.ok() && ::stat(files.key_file.c_str(), &st) != 0) {
      return written.WithContext(files.setting + " (is its folder there and writable?)");
    }
  }
  auto key = LoadSecretKey32(files.key_file, files.what, "--store-key");
  if (!key.ok()) return key.status().WithContext(files.setting);
  return key;
}

}  // namespace

StatusOr<std::unique_ptr<CaseVault>> CaseVault::Open(sqlite3* db, const std::string& db_path, const Files& files) {
  std::unique_ptr<CaseVault> vault(new CaseVault());
  vault->db_ = db;
  vault->db_path_ = db_path;
  vault->files_ = files;
  if (vault->files_.ring_file.empty()) vault->files_.ring_file = DefaultCaseKeyRingPath(files.key_file);
  LIAISON_RETURN_IF_ERROR(vault->Exec(kSchema));
  // A file already sealed under a key: a missing key or ring is lost, not
  // new. Making fresh ones would seal new messages under them and leave the
  // old ones unreadable; say what to restore instead.
  auto missing = [&](const std::string& file, const std::string& name) -> Status {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0 && errno == ENOENT) {
      return Status::NotFound(db_path + " is sealed under the " + name + " " + file +
                              ", which does not exist: restore it from the key backup, or set " + files.setting +
                              " to where it is");
    }
    return Status::Ok();
  };
  {
    SqliteStatement q(db, "SELECT 1 FROM vault_meta WHERE name = 'key_check'");
    const int rc = q.Step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return q.Error(db_path + ": reading the key check");
    if (rc == SQLITE_ROW) LIAISON_RETURN_IF_ERROR(missing(vault->files_.key_file, files.what));
  }
  auto key = LoadOrMakeKey(vault->files_);
  if (!key.ok()) return key.status();
  vault->key_ = *key;
  OPENSSL_cleanse(key->data(), key->size());
  LIAISON_RETURN_IF_ERROR(vault->CheckKey());
  auto epoch = vault->ReadEpoch();
  if (!epoch.ok()) return epoch.status();
  if (epoch->has_value()) LIAISON_RETURN_IF_ERROR(missing(vault->files_.ring_file, files.what + "'s case-key ring"));
  auto ring = CaseKeyRing::Open(vault->files_.ring_file, vault->key_);
  if (!ring.ok()) return ring.status().WithContext(files.setting);
  vault->ring_ = std::move(*ring);
  LIAISON_RETURN_IF_ERROR(CheckRing(*vault->ring_, db_path, *epoch));
  return vault;
}

Status CaseVault::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    Status st = Status::IoError(db_path_ + ": " + (error ? error : sqlite3_errmsg(db_)));
    sqlite3_free(error);
    return st;
  }
  return Status::Ok();
}

Status CaseVault::CheckKey() {
  SqliteStatement q(db_, "SELECT value FROM vault_meta WHERE name = 'key_check'");
  const int rc = q.Step();
  if (rc == SQLITE_ROW) {
    if (KeyCheckOpens(key_, q.ColumnBlob(0))) return Status::Ok();
    return Status::PermissionDenied(db_path_ + ": the " + files_.what + " " + files_.key_file +
                                    " is not the key this file was made with; set " + files_.setting +
                                    " to this file's key (restore it from the key backup)");
  }
  if (rc != SQLITE_DONE) return q.Error(db_path_ + ": reading the key check");
  auto sealed = SealKeyCheck(key_);
  if (!sealed) return Status::Internal(db_path_ + ": cannot encrypt (OpenSSL AES-256-GCM or its random source failed)");
  SqliteStatement put(db_, "INSERT INTO vault_meta (name, value) VALUES ('key_check', ?1)");
  if (!put.Blob(1, sealed->data(), sealed->size()).Done()) return put.Error(db_path_ + ": writing the key check");
  return Status::Ok();
}

StatusOr<std::optional<std::pair<uint64_t, std::vector<uint8_t>>>> CaseVault::ReadEpoch() {
  std::optional<uint64_t> epoch;
  std::vector<uint8_t> check;
  SqliteStatement q(db_, "SELECT name, value FROM vault_meta WHERE name IN ('kek_epoch', 'kek_check')");
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) {
    if (q.ColumnText(0) == "kek_epoch") {
      epoch = static_cast<uint64_t>(q.ColumnInt(1));
    } else {
      check = q.ColumnBlob(1);
    }
  }
  if (rc != SQLITE_DONE) return q.Error(db_path_ + ": reading the case-key epoch");
  if (!epoch) return std::optional<std::pair<uint64_t, std::vector<uint8_t>>>();
  return std::optional<std::pair<uint64_t, std::vector<uint8_t>>>(std::make_pair(*epoch, std::move(check)));
}

Status CaseVault::WriteEpoch(uint64_t epoch) {
  auto kek = ring_->Kek(epoch);
  auto check = kek ? SealKekCheck(*kek, epoch) : std::nullopt;
  if (!check) return Status::Internal(db_path_ + ": cannot seal the case-key epoch (no KEK, or OpenSSL failed)");
  SqliteStatement e(db_, "INSERT OR REPLACE INTO vault_meta (name, value) VALUES ('kek_epoch', ?1)");
  if (!e.Int(1, static_cast<int64_t>(epoch)).Done()) return e.Error(db_path_ + ": writing the case-key epoch");
  SqliteStatement c(db_, "INSERT OR REPLACE INTO vault_meta (name, value) VALUES ('kek_check', ?1)");
  if (!c.Blob(1, check->data(), check->size()).Done()) return c.Error(db_path_ + ": writing the case-key epoch");
  return Status::Ok();
}

Status CaseVault::Settle() {
  auto meta = ReadEpoch();
  if (!meta.ok()) return meta.status();
  if (!*meta) return WriteEpoch(ring_->epoch());  // the first transaction: the ring's epoch
  const auto& [epoch, check] = **meta;
  // Kek() reads the ring file again when another process moved it on.
  if (auto kek = ring_->Kek(epoch)) {
    if (!KekCheckOpens(*kek, epoch, check)) {
      return Status::PermissionDenied(db_path_ + ": the case-key ring " + ring_->path() +
                                      " is not this file's; set " + files_.setting + " to this file's key");
    }
    // Drops a KEK staged by a process that did not commit its rotation.
    return ring_->Settle(epoch);
  }
  if (ring_->epoch() > epoch) return Adopt(epoch);
  return CheckRing(*ring_, db_path_, *meta);  // an older ring: says so
}

Status CaseVault::Adopt(uint64_t file_epoch) {
  // A backup taken before an erasure: its keys are wrapped under a KEK that
  // is gone. A case the ring's snapshot holds takes its key from there; one
  // it does not hold was shredded since and loses its row.
  // A case erased and then given a new key has a snapshot entry too: the
  // row's key check tells the two apart.
  struct Row {
    std::string sender, case_id;
    std::vector<uint8_t> key_check;
  };
  std::vector<Row> rows;
  {
    SqliteStatement q(db_, "SELECT sender, case_id, key_check FROM case_keys");
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      const std::vector<uint8_t> id = q.ColumnBlob(1);
      rows.push_back(Row{q.ColumnText(0), std::string(id.begin(), id.end()), q.ColumnBlob(2)});
    }
    if (rc != SQLITE_DONE) return q.Error(db_path_ + ": reading the case keys");
  }
  const uint64_t epoch = ring_->epoch();
  auto kek = ring_->Kek(epoch);
  if (!kek) return Status::Internal("case-key ring " + ring_->path() + ": holds no KEK of its own epoch");
  int64_t kept = 0, shredded = 0;
  for (const auto& [sender, case_id, key_check] : rows) {
    auto snap = ring_->Snapshot(sender, case_id);
    bool same = false;
    if (snap && snap->first == epoch) {
      if (auto key = UnwrapCaseKey(*kek, sender, case_id, epoch, snap->second)) {
        same = KeyCheckOpens(*key, key_check);
        OPENSSL_cleanse(key->data(), key->size());
      }
    }
    if (same) {
      SqliteStatement u(db_, "UPDATE case_keys SET epoch = ?3, wrapped = ?4 WHERE sender = ?1 AND case_id = ?2");
      u.Text(1, sender).Blob(2, case_id.data(), case_id.size()).Int(3, static_cast<int64_t>(epoch));
      if (!u.Blob(4, snap->second.data(), snap->second.size()).Done()) return u.Error(db_path_ + ": adopting case keys");
      ++kept;
    } else {
      SqliteStatement d(db_, "DELETE FROM case_keys WHERE sender = ?1 AND case_id = ?2");
      if (!d.Text(1, sender).Blob(2, case_id.data(), case_id.size()).Done()) {
        return d.Error(db_path_ + ": adopting case keys");
      }
      ++shredded;
    }
  }
  LIAISON_RETURN_IF_ERROR(WriteEpoch(epoch));
  spdlog::warn("event=case_keys_adopted file=\"{}\" file_epoch={} ring_epoch={} cases_kept={} cases_shredded_since={}",
               db_path_, file_epoch, epoch, kept, shredded);
  return Status::Ok();
}

Status CaseVault::Transaction(const std::function<Status()>& body) {
  if (in_transaction_) return Status::Internal(db_path_ + ": CaseVault::Transaction inside a transaction");
  LIAISON_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  in_transaction_ = true;
  Status st = Settle();
  if (st.ok()) st = body();
  if (st.ok() && shredded_) st = Rotate();
  if (st.ok()) st = Exec("COMMIT");
  const bool shredded = shredded_;
  const uint64_t staged = staged_epoch_;
  in_transaction_ = false;
  shredded_ = false;
  staged_epoch_ = 0;
  for (auto& [id, key] : keys_) OPENSSL_cleanse(key.data(), key.size());
  keys_.clear();
  if (!st.ok()) {
    // Fails harmlessly when COMMIT already ended the transaction.
    (void)sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    if (staged != 0) ring_->Abandon(staged);
    return st;
  }
  // The file is at the new epoch: the old KEK goes now (or, without a
  // rotation, an earlier retirement that failed is tried again; a failure
  // is logged by the ring and owed to the next transaction).
  ring_->Retire(staged);
  if (!shredded) return Status::Ok();
  // Then the WAL: its frames still hold the pages as they were before (the
  // erased rows, the key row, both sealed, and the key wrapped under the old
  // KEK); copy the new pages into the database and cut the WAL to zero
  // bytes. The transaction has committed either way: a failure is logged.
  SqliteStatement checkpoint(db_, "PRAGMA wal_checkpoint(TRUNCATE)");
  const int rc = checkpoint.Step();
  if (rc != SQLITE_ROW || checkpoint.ColumnInt(0) != 0) {
    spdlog::error("event=wal_truncate_failed file=\"{}\" reason=\"{}\" effect=the_old_frames_stay_until_the_next_"
                  "checkpoint_and_hold_only_sealed_bytes",
                  db_path_, rc == SQLITE_ROW ? "busy" : sqlite3_errmsg(db_));
  }
  return Status::Ok();
}

std::string CaseVault::CaseId(const std::string& sender, const std::string& case_ref) const {
  return CaseHash(key_, sender, case_ref);
}

StatusOr<std::optional<CaseKey>> CaseVault::FindKey(const std::string& sender, const std::string& case_id) {
  const std::string id = sender + '\0' + case_id;
  if (auto it = keys_.find(id); it != keys_.end()) return std::optional<CaseKey>(it->second);
  SqliteStatement q(db_, "SELECT epoch, wrapped FROM case_keys WHERE sender = ?1 AND case_id = ?2");
  const int rc = q.Text(1, sender).Blob(2, case_id.data(), case_id.size()).Step();
  if (rc == SQLITE_DONE) return std::optional<CaseKey>();
  if (rc != SQLITE_ROW) return q.Error(db_path_ + ": reading a case key");
  const uint64_t epoch = static_cast<uint64_t>(q.ColumnInt(0));
  auto kek = ring_->Kek(epoch);
  auto key = kek ? UnwrapCaseKey(*kek, sender, case_id, epoch, q.ColumnBlob(1)) : std::nullopt;
  if (!key) {
    return Status::PermissionDenied(db_path_ + ": a case key does not open under the case-key ring " + ring_->path() +
                                    " (epoch " + std::to_string(epoch) + "); set " + files_.setting +
                                    " to this file's key");
  }
  keys_[id] = *key;
  return std::optional<CaseKey>(*key);
}

StatusOr<std::vector<uint8_t>> CaseVault::Seal(const std::string& sender, const std::string& case_id,
                                               const std::string& row, std::span<const uint8_t> data) {
  if (!in_transaction_) return Status::Internal(db_path_ + ": CaseVault::Seal outside a transaction");
  auto found = FindKey(sender, case_id);
  if (!found.ok()) return found.status();
  CaseKey key;
  if (*found) {
    key = **found;
  } else {
    key = RandomSecretKey32();
    const uint64_t epoch = ring_->epoch();
    auto kek = ring_->Kek(epoch);
    auto wrapped = kek ? WrapCaseKey(*kek, sender, case_id, epoch, key) : std::nullopt;
    auto check = SealKeyCheck(key);
    if (!wrapped || !check) return Status::Internal(db_path_ + ": cannot wrap a case key (OpenSSL AES-256-GCM failed)");
    SqliteStatement put(db_, "INSERT INTO case_keys (sender, case_id, epoch, wrapped, key_check) VALUES (?1, ?2, ?3, ?4, ?5)");
    put.Text(1, sender).Blob(2, case_id.data(), case_id.size()).Int(3, static_cast<int64_t>(epoch));
    put.Blob(4, wrapped->data(), wrapped->size()).Blob(5, check->data(), check->size());
    if (!put.Done()) return put.Error(db_path_ + ": writing a case key");
    keys_[sender + '\0' + case_id] = key;
  }
  auto sealed = liaison::Seal(key, RowAad(sender, row), data.data(), data.size());
  OPENSSL_cleanse(key.data(), key.size());
  if (!sealed) return Status::Internal(db_path_ + ": cannot encrypt (OpenSSL AES-256-GCM or its random source failed)");
  return std::move(*sealed);
}

StatusOr<std::optional<std::vector<uint8_t>>> CaseVault::Unseal(const std::string& sender, const std::string& case_id,
                                                                const std::string& row,
                                                                std::span<const uint8_t> sealed) {
  if (!in_transaction_) return Status::Internal(db_path_ + ": CaseVault::Unseal outside a transaction");
  auto found = FindKey(sender, case_id);
  if (!found.ok()) return found.status();
  if (!*found) return std::optional<std::vector<uint8_t>>();
  CaseKey key = **found;
  auto opened = liaison::Unseal(key, RowAad(sender, row), sealed.data(), sealed.size());
  OPENSSL_cleanse(key.data(), key.size());
  return opened;
}

StatusOr<bool> CaseVault::Shred(const std::string& sender, const std::string& case_id) {
  if (!in_transaction_) return Status::Internal(db_path_ + ": CaseVault::Shred outside a transaction");
  SqliteStatement d(db_, "DELETE FROM case_keys WHERE sender = ?1 AND case_id = ?2");
  if (!d.Text(1, sender).Blob(2, case_id.data(), case_id.size()).Done()) {
    return d.Error(db_path_ + ": destroying a case key");
  }
  if (auto it = keys_.find(sender + '\0' + case_id); it != keys_.end()) {
    OPENSSL_cleanse(it->second.data(), it->second.size());
    keys_.erase(it);
  }
  const bool had = sqlite3_changes(db_) > 0;
  shredded_ |= had;
  return had;
}

Status CaseVault::Rotate() {
  std::map<std::string, CaseKey> keys;
  {
    SqliteStatement q(db_, "SELECT sender, case_id, epoch, wrapped FROM case_keys");
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      const std::string sender = q.ColumnText(0);
      const std::vector<uint8_t> id = q.ColumnBlob(1);
      const std::string case_id(id.begin(), id.end());
      const uint64_t epoch = static_cast<uint64_t>(q.ColumnInt(2));
      auto kek = ring_->Kek(epoch);
      auto key = kek ? UnwrapCaseKey(*kek, sender, case_id, epoch, q.ColumnBlob(3)) : std::nullopt;
      if (!key) {
        return Status::PermissionDenied(db_path_ + ": a case key does not open under the case-key ring " +
                                        ring_->path() + "; set " + files_.setting + " to this file's key");
      }
      keys[sender + '\0' + case_id] = *key;
    }
    if (rc != SQLITE_DONE) return q.Error(db_path_ + ": reading the case keys");
  }
  auto staged = ring_->Stage(keys);
  for (auto& [id, key] : keys) OPENSSL_cleanse(key.data(), key.size());
  if (!staged.ok()) return staged.status();
  staged_epoch_ = staged->epoch;  // abandoned if the commit fails
  for (const auto& [id, wrapped] : staged->wrapped) {
    const size_t zero = id.find('\0');
    const std::string sender = id.substr(0, zero), case_id = id.substr(zero + 1);
    SqliteStatement u(db_, "UPDATE case_keys SET epoch = ?3, wrapped = ?4 WHERE sender = ?1 AND case_id = ?2");
    u.Text(1, sender).Blob(2, case_id.data(), case_id.size()).Int(3, static_cast<int64_t>(staged->epoch));
    if (!u.Blob(4, wrapped.data(), wrapped.size()).Done()) return u.Error(db_path_ + ": re-wrapping the case keys");
  }
  OPENSSL_cleanse(staged->kek.data(), staged->kek.size());
  LIAISON_RETURN_IF_ERROR(WriteEpoch(staged->epoch));
  spdlog::info("event=case_keys_rotated file=\"{}\" epoch={} cases={}", db_path_, staged->epoch, keys.size());
  return Status::Ok();
}

}  // namespace liaison
