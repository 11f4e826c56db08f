#include "store/store.h"

#include "liaison/keys.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace liaison::store {
namespace {

constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;
constexpr const char* kKeyCheckText = "liaison store key check v1";

// Rows: 0 queued, 2 acked, 3 expired, 4 erased, 5 damaged (does not decrypt).

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  sender TEXT NOT NULL,
  message_id TEXT NOT NULL,
  recipient TEXT NOT NULL,
  case_hash BLOB,
  state INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  acked_ms INTEGER,
  purge_after_ms INTEGER NOT NULL,
  sealed BLOB,
  label TEXT,
  UNIQUE (sender, message_id, recipient));
CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, state, seq);
CREATE INDEX IF NOT EXISTS messages_by_case ON messages (sender, case_hash, state);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (state, expires_ms);
CREATE TABLE IF NOT EXISTS receipts (
  sender TEXT NOT NULL, message_id TEXT NOT NULL, receipt BLOB NOT NULL,
  purge_after_ms INTEGER NOT NULL, PRIMARY KEY (sender, message_id));
CREATE TABLE IF NOT EXISTS disclosures (
  sender TEXT NOT NULL, case_hash BLOB NOT NULL, recipient TEXT NOT NULL,
  PRIMARY KEY (sender, case_hash, recipient));
CREATE TABLE IF NOT EXISTS notices (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, agency TEXT NOT NULL, receipt BLOB NOT NULL);
)sql";

std::string SqliteError(sqlite3* db, const std::string& what) {
  const int code = sqlite3_extended_errcode(db);
  std::string hint;
  if ((code & 0xff) == SQLITE_FULL) hint = " (the disk is full: free space, the broker keeps refusing to store)";
  if ((code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB) {
    hint = " (the store file is damaged: restore it from a backup)";
  }
  if ((code & 0xff) == SQLITE_READONLY || (code & 0xff) == SQLITE_CANTOPEN) {
    hint = " (check the path and its permissions)";
  }
  return what + ": " + sqlite3_errmsg(db) + hint;
}

// nonce || ciphertext || tag, with `aad` authenticated.
std::vector<uint8_t> Seal(const StoreKey& key, const std::string& aad, const uint8_t* data, size_t size) {
  std::vector<uint8_t> out(kNonceBytes + size + kTagBytes);
  RAND_bytes(out.data(), kNonceBytes);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int len = 0;
  bool ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), out.data()) == 1 &&
            EVP_EncryptUpdate(ctx, nullptr, &len, reinterpret_cast<const uint8_t*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_EncryptUpdate(ctx, out.data() + kNonceBytes, &len, data, static_cast<int>(size)) == 1 &&
            EVP_EncryptFinal_ex(ctx, out.data() + kNonceBytes + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes,
                                out.data() + kNonceBytes + size) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) std::abort();  // AES-GCM unavailable: nothing sensible to do
  return out;
}

// Empty optional if the data or its authentication is wrong.
std::optional<std::vector<uint8_t>> Unseal(const StoreKey& key, const std::string& aad,
                                           const uint8_t* sealed, size_t size) {
  if (size < kNonceBytes + kTagBytes) return std::nullopt;
  const size_t n = size - kNonceBytes - kTagBytes;
  std::vector<uint8_t> out(n);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int len = 0;
  bool ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), sealed) == 1 &&
            EVP_DecryptUpdate(ctx, nullptr, &len, reinterpret_cast<const uint8_t*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_DecryptUpdate(ctx, out.data(), &len, sealed + kNonceBytes, static_cast<int>(n)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes,
                                const_cast<uint8_t*>(sealed + kNonceBytes + n)) == 1 &&
            EVP_DecryptFinal_ex(ctx, out.data() + len, &len) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) return std::nullopt;
  return out;
}

std::string Aad(const std::string& sender, const std::string& id, const std::string& recipient) {
  return sender + '\0' + id + '\0' + recipient;
}

class Reset {
 public:
  explicit Reset(sqlite3_stmt* s) : s_(s) {}
  ~Reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

 private:
  sqlite3_stmt* s_;
};

void BindText(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
void BindBlob(sqlite3_stmt* s, int i, const void* data, size_t size) {
  sqlite3_bind_blob(s, i, data, static_cast<int>(size), SQLITE_TRANSIENT);
}
std::string ColumnText(sqlite3_stmt* s, int i) {
  const auto* p = sqlite3_column_text(s, i);
  return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s, i)) : std::string();
}
std::vector<uint8_t> ColumnBlob(sqlite3_stmt* s, int i) {
  const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(s, i));
  return p ? std::vector<uint8_t>(p, p + sqlite3_column_bytes(s, i)) : std::vector<uint8_t>();
}

}  // namespace

StatusOr<StoreKey> LoadStoreKey(const std::string& path) {
  return LoadSecretKey32(path, "store key", "--store-key");
}

Status WriteStoreKey(const std::string& path) {
  return WriteSecretKey32(
      path, "liaison store key (AES-256-GCM at rest). Keep secret; back it up with the store.",
      RandomSecretKey32());
}

StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path, const StoreKey& key) {
  std::unique_ptr<Store> store(new Store());
  store->key_ = key;
  store->path_ = path;
  // Case data: owner-only, whatever the umask (the -wal and -shm files
  // SQLite makes later take this file's mode).
  LIAISON_RETURN_IF_ERROR(MakeOwnerOnlySqliteFile(path).WithContext("store"));
  if (sqlite3_open_v2(path.c_str(), &store->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    return Status::IoError(SqliteError(store->db_, "cannot open the store " + path));
  }
  sqlite3_busy_timeout(store->db_, 5000);
  // WAL with synchronous=FULL: a commit is on disk when it returns.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                             "PRAGMA foreign_keys=ON"}) {
    LIAISON_RETURN_IF_ERROR(store->Exec(pragma).WithContext("store " + path));
  }
  sqlite3_stmt* check = nullptr;
  if (sqlite3_prepare_v2(store->db_, "PRAGMA quick_check", -1, &check, nullptr) != SQLITE_OK) {
    return Status::Corruption(SqliteError(store->db_, "store " + path + " cannot be read"));
  }
  std::string verdict;
  while (sqlite3_step(check) == SQLITE_ROW) verdict += ColumnText(check, 0);
  sqlite3_finalize(check);
  if (verdict != "ok") {
    return Status::Corruption("store " + path + " failed its integrity check (" + verdict.substr(0, 200) +
                              "); restore it from a backup");
  }
  LIAISON_RETURN_IF_ERROR(store->Exec(kSchema).WithContext("store " + path));
  // Stores made before messages had a label gain the column (NULL = none).
  bool has_label = false;
  sqlite3_stmt* columns = nullptr;
  sqlite3_prepare_v2(store->db_, "PRAGMA table_info(messages)", -1, &columns, nullptr);
  while (columns && sqlite3_step(columns) == SQLITE_ROW) has_label |= ColumnText(columns, 1) == "label";
  sqlite3_finalize(columns);
  if (!has_label) {
    LIAISON_RETURN_IF_ERROR(store->Exec("ALTER TABLE messages ADD COLUMN label TEXT").WithContext("store " + path));
  }
  LIAISON_RETURN_IF_ERROR(store->CheckKey());
  return store;
}

Store::~Store() {
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  if (db_) sqlite3_close(db_);
}

Status Store::CheckKey() {
  sqlite3_stmt* s = Prepare("SELECT value FROM meta WHERE name = 'key_check'");
  Reset reset(s);
  const std::string text = kKeyCheckText;
  if (sqlite3_step(s) == SQLITE_ROW) {
    std::vector<uint8_t> sealed = ColumnBlob(s, 0);
    auto opened = Unseal(key_, "key_check", sealed.data(), sealed.size());
    if (!opened || std::string(opened->begin(), opened->end()) != text) {
      return Status::PermissionDenied("store " + path_ +
                                      ": the store key does not match this database (wrong key file?)");
    }
    return Status::Ok();
  }
  auto sealed = Seal(key_, "key_check", reinterpret_cast<const uint8_t*>(text.data()), text.size());
  sqlite3_stmt* put = Prepare("INSERT INTO meta (name, value) VALUES ('key_check', ?1)");
  Reset reset_put(put);
  BindBlob(put, 1, sealed.data(), sealed.size());
  if (sqlite3_step(put) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store " + path_));
  return Status::Ok();
}

Status Store::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = SqliteError(db_, std::string("store: ") + (error ? error : "error"));
    sqlite3_free(error);
    return Status::IoError(message);
  }
  return Status::Ok();
}

sqlite3_stmt* Store::Prepare(const char* sql) {
  auto it = statements_.find(sql);
  if (it != statements_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
    std::abort();  // our SQL is fixed: a failure here is a bug
  }
  statements_[sql] = s;
  return s;
}

Status Store::Begin() {
  if (in_transaction_) return Status::Ok();
  LIAISON_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  in_transaction_ = true;
  return Status::Ok();
}

Status Store::Commit() {
  if (!in_transaction_) return Status::Ok();
  Status st = Exec("COMMIT");
  if (!st.ok()) Rollback();
  in_transaction_ = false;
  return st;
}

void Store::Rollback() {
  if (in_transaction_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  in_transaction_ = false;
}

std::string Store::CaseHash(const std::string& sender, const std::string& case_ref) const {
  // Keyed, so that the file does not reveal which case references it holds.
  const std::string input = sender + '\0' + case_ref;
  unsigned char out[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), 16);
}

StatusOr<std::optional<std::vector<uint8_t>>> Store::FindReceipt(const std::string& sender,
                                                                const std::string& message_id) {
  sqlite3_stmt* s = Prepare("SELECT receipt FROM receipts WHERE sender = ?1 AND message_id = ?2");
  Reset reset(s);
  BindText(s, 1, sender);
  BindText(s, 2, message_id);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return std::optional<std::vector<uint8_t>>(ColumnBlob(s, 0));
  if (rc == SQLITE_DONE) return std::optional<std::vector<uint8_t>>();
  return Status::IoError(SqliteError(db_, "store: reading a receipt"));
}

Status Store::PutReceipt(const std::string& sender, const std::string& message_id,
                         const std::vector<uint8_t>& receipt, int64_t purge_after_ms) {
  sqlite3_stmt* s = Prepare(
      "INSERT OR REPLACE INTO receipts (sender, message_id, receipt, purge_after_ms) VALUES (?1, ?2, ?3, ?4)");
  Reset reset(s);
  BindText(s, 1, sender);
  BindText(s, 2, message_id);
  BindBlob(s, 3, receipt.data(), receipt.size());
  sqlite3_bind_int64(s, 4, purge_after_ms);
  if (sqlite3_step(s) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: writing a receipt"));
  return Status::Ok();
}

Status Store::Enqueue(const std::string& sender, const std::string& message_id,
                      const std::string& recipient, const std::string& case_ref,
                      const uint8_t* envelope, size_t size, int64_t now_ms, int64_t expires_ms,
                      int64_t purge_after_ms, const std::string& label) {
  const std::string case_hash = CaseHash(sender, case_ref);
  const auto sealed = Seal(key_, Aad(sender, message_id, recipient), envelope, size);
  sqlite3_stmt* s = Prepare(
      "INSERT OR IGNORE INTO messages (sender, message_id, recipient, case_hash, state, created_ms, expires_ms, "
      "purge_after_ms, sealed, label) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9)");
  Reset reset(s);
  BindText(s, 1, sender);
  BindText(s, 2, message_id);
  BindText(s, 3, recipient);
  BindBlob(s, 4, case_hash.data(), case_hash.size());
  sqlite3_bind_int64(s, 5, now_ms);
  sqlite3_bind_int64(s, 6, expires_ms);
  sqlite3_bind_int64(s, 7, purge_after_ms);
  BindBlob(s, 8, sealed.data(), sealed.size());
  BindText(s, 9, label);
  if (sqlite3_step(s) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: queueing a message"));
  sqlite3_stmt* d = Prepare(
      "INSERT OR IGNORE INTO disclosures (sender, case_hash, recipient) VALUES (?1, ?2, ?3)");
  Reset reset_d(d);
  BindText(d, 1, sender);
  BindBlob(d, 2, case_hash.data(), case_hash.size());
  BindText(d, 3, recipient);
  if (sqlite3_step(d) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: recording a disclosure"));
  return Status::Ok();
}

StatusOr<std::vector<QueuedMessage>> Store::Pending(const std::string& recipient, int64_t after_seq,
                                                    int limit) {
  sqlite3_stmt* s = Prepare(
      "SELECT seq, sender, message_id, sealed FROM messages WHERE recipient = ?1 AND state = 0 "
      "AND seq > ?2 ORDER BY seq LIMIT ?3");
  Reset reset(s);
  BindText(s, 1, recipient);
  sqlite3_bind_int64(s, 2, after_seq);
  sqlite3_bind_int(s, 3, limit);
  std::vector<QueuedMessage> out;
  std::vector<int64_t> damaged;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    QueuedMessage m;
    m.seq = sqlite3_column_int64(s, 0);
    m.sender = ColumnText(s, 1);
    m.message_id = ColumnText(s, 2);
    std::vector<uint8_t> sealed = ColumnBlob(s, 3);
    auto opened = Unseal(key_, Aad(m.sender, m.message_id, recipient), sealed.data(), sealed.size());
    if (!opened) {
      damaged.push_back(m.seq);  // set aside below, so it cannot block the queue
      continue;
    }
    m.envelope = std::move(*opened);
    out.push_back(std::move(m));
  }
  if (rc != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: reading the queue"));
  for (int64_t seq : damaged) {
    spdlog::error("event=store_damaged_message seq={} recipient={} action=set_aside "
                  "hint=\"restore the store from a backup to recover it\"", seq, recipient);
    sqlite3_stmt* u = Prepare("UPDATE messages SET state = 5 WHERE seq = ?1");
    Reset reset_u(u);
    sqlite3_bind_int64(u, 1, seq);
    if (sqlite3_step(u) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: setting aside"));
  }
  return out;
}

StatusOr<std::optional<AckedMessage>> Store::Ack(const std::string& recipient, int64_t seq,
                                                 int64_t now_ms) {
  std::optional<AckedMessage> sender;
  {
    sqlite3_stmt* q =
        Prepare("SELECT sender, label FROM messages WHERE seq = ?1 AND recipient = ?2 AND state = 0");
    Reset reset(q);
    sqlite3_bind_int64(q, 1, seq);
    BindText(q, 2, recipient);
    if (sqlite3_step(q) == SQLITE_ROW) sender = AckedMessage{ColumnText(q, 0), ColumnText(q, 1)};
  }
  if (!sender) return sender;
  // The message itself is no longer needed once delivered: drop the copy now.
  sqlite3_stmt* s = Prepare("UPDATE messages SET state = 2, acked_ms = ?2, sealed = NULL WHERE seq = ?1");
  Reset reset(s);
  sqlite3_bind_int64(s, 1, seq);
  sqlite3_bind_int64(s, 2, now_ms);
  if (sqlite3_step(s) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: recording an ack"));
  return sender;
}

StatusOr<std::vector<ExpiredMessage>> Store::ExpireDue(int64_t now_ms) {
  sqlite3_stmt* q = Prepare(
      "SELECT sender, message_id, recipient, label FROM messages WHERE state = 0 AND expires_ms <= ?1");
  std::vector<ExpiredMessage> out;
  {
    Reset reset(q);
    sqlite3_bind_int64(q, 1, now_ms);
    while (sqlite3_step(q) == SQLITE_ROW) {
      out.push_back({ColumnText(q, 0), ColumnText(q, 1), ColumnText(q, 2), ColumnText(q, 3)});
    }
  }
  if (out.empty()) return out;
  sqlite3_stmt* s = Prepare("UPDATE messages SET state = 3, sealed = NULL WHERE state = 0 AND expires_ms <= ?1");
  Reset reset(s);
  sqlite3_bind_int64(s, 1, now_ms);
  if (sqlite3_step(s) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: expiring messages"));
  return out;
}

StatusOr<int64_t> Store::PurgeDue(int64_t now_ms) {
  int64_t n = 0;
  for (const char* sql : {"DELETE FROM messages WHERE state <> 0 AND purge_after_ms <= ?1",
                          "DELETE FROM receipts WHERE purge_after_ms <= ?1"}) {
    sqlite3_stmt* s = Prepare(sql);
    Reset reset(s);
    sqlite3_bind_int64(s, 1, now_ms);
    if (sqlite3_step(s) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: purging"));
    n += sqlite3_changes(db_);
  }
  return n;
}

StatusOr<std::unordered_map<std::string, int64_t>> Store::QueueDepths() {
  sqlite3_stmt* s = Prepare("SELECT recipient, COUNT(*) FROM messages WHERE state = 0 GROUP BY recipient");
  Reset reset(s);
  std::unordered_map<std::string, int64_t> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) out[ColumnText(s, 0)] = sqlite3_column_int64(s, 1);
  if (rc != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: counting queues"));
  return out;
}

StatusOr<std::vector<std::string>> Store::Disclosures(const std::string& sender,
                                                      const std::string& case_ref) {
  const std::string h = CaseHash(sender, case_ref);
  sqlite3_stmt* s = Prepare("SELECT recipient FROM disclosures WHERE sender = ?1 AND case_hash = ?2 ORDER BY recipient");
  Reset reset(s);
  BindText(s, 1, sender);
  BindBlob(s, 2, h.data(), h.size());
  std::vector<std::string> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) out.push_back(ColumnText(s, 0));
  if (rc != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: reading disclosures"));
  return out;
}

StatusOr<std::vector<ExpiredMessage>> Store::EraseQueued(const std::string& sender,
                                                         const std::string& case_ref) {
  const std::string h = CaseHash(sender, case_ref);
  std::vector<ExpiredMessage> out;
  {
    sqlite3_stmt* q = Prepare(
        "SELECT message_id, recipient, label FROM messages WHERE sender = ?1 AND case_hash = ?2 AND state = 0");
    Reset reset(q);
    BindText(q, 1, sender);
    BindBlob(q, 2, h.data(), h.size());
    while (sqlite3_step(q) == SQLITE_ROW) {
      out.push_back({sender, ColumnText(q, 0), ColumnText(q, 1), ColumnText(q, 2)});
    }
  }
  sqlite3_stmt* s = Prepare(
      "UPDATE messages SET state = 4, sealed = NULL WHERE sender = ?1 AND case_hash = ?2 AND state = 0");
  Reset reset(s);
  BindText(s, 1, sender);
  BindBlob(s, 2, h.data(), h.size());
  if (sqlite3_step(s) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: erasing a case"));
  return out;
}

Status Store::AddNotice(const std::string& agency, const std::vector<uint8_t>& receipt) {
  sqlite3_stmt* s = Prepare("INSERT INTO notices (agency, receipt) VALUES (?1, ?2)");
  Reset reset(s);
  BindText(s, 1, agency);
  BindBlob(s, 2, receipt.data(), receipt.size());
  if (sqlite3_step(s) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: writing a notice"));
  return Status::Ok();
}

StatusOr<std::vector<Notice>> Store::Notices(const std::string& agency, int limit) {
  sqlite3_stmt* s = Prepare("SELECT seq, receipt FROM notices WHERE agency = ?1 ORDER BY seq LIMIT ?2");
  Reset reset(s);
  BindText(s, 1, agency);
  sqlite3_bind_int(s, 2, limit);
  std::vector<Notice> out;
  while (sqlite3_step(s) == SQLITE_ROW) out.push_back({sqlite3_column_int64(s, 0), ColumnBlob(s, 1)});
  return out;
}

Status Store::DeleteNotice(int64_t seq) {
  sqlite3_stmt* s = Prepare("DELETE FROM notices WHERE seq = ?1");
  Reset reset(s);
  sqlite3_bind_int64(s, 1, seq);
  if (sqlite3_step(s) != SQLITE_DONE) return Status::IoError(SqliteError(db_, "store: deleting a notice"));
  return Status::Ok();
}

}  // namespace liaison::store
