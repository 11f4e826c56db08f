// Per-case keys for the files an agency keeps on its own side: the agent's
// outbox and the gateway's state file (docs/audit.md, "Erasure that
// shreds"). The same scheme as the broker's store (liaison/case_keys.h):
// every message of a case is sealed (AES-256-GCM) under that case's random
// key; the key is kept in the file's `case_keys` table, wrapped under the
// KEK of a case-key ring, and the ring's KEK is sealed under the file's key.
// The key and the ring are two small files beside the agency's other keys
// (mode 0600, made at first use), never in the database: a backup of the
// database alone opens nothing.
//
// Shredding a case deletes its key row and moves the ring to a new epoch
// (a fresh KEK re-wraps every other case key, in the same transaction; the
// old KEK is destroyed once it committed). A backup of the file taken
// before the erasure, opened with the key and the current ring, opens every
// other case (through the ring's snapshot) and none of the erased case's.
//
// A case is (sender, case_ref): this agency's own messages are filed under
// the sender "" (the agent does not know its agency id before the broker
// welcomes it), a received message under the agency that sent it.
//
// Not thread-safe: the owner (Outbox, GatewayStore) serialises calls. Several
// processes may share a file and its ring (a `liaison send` beside a
// `liaison listen`): every call runs in a write transaction of the file,
// which orders them, and first settles the ring with the epoch the file is at.
#ifndef LIAISON_CASE_VAULT_H_
#define LIAISON_CASE_VAULT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "liaison/case_keys.h"
#include "liaison/status.h"

struct sqlite3;

namespace liaison {

class CaseVault {
 public:
  struct Files {
    std::string key_file;   // 64 hex digits, mode 0600; made at first use
    std::string ring_file;  // empty: DefaultCaseKeyRingPath(key_file)
    // What the key is called in errors ("outbox key") and the config
    // setting that names it ("agent.yaml outbox_key_file").
    std::string what;
    std::string setting;
  };

  // Loads (or makes) the key and its ring, creates the vault's tables in
  // `db` (the caller's open connection, which it keeps owning) and checks
  // that the key and the ring are this file's. `db_path` is for errors.
  static StatusOr<std::unique_ptr<CaseVault>> Open(sqlite3* db, const std::string& db_path, const Files& files);

  // Runs `body` in one write transaction (BEGIN IMMEDIATE ... COMMIT), after
  // settling the ring with the file. A Shred in `body` rotates the ring
  // before the commit; after the commit the old KEK is destroyed and the
  // WAL checkpointed and truncated, so that no earlier page image (the
  // erased case's rows, its wrapped key) stays in the -wal file. Any error:
  // rolled back, nothing happened.
  Status Transaction(const std::function<Status()>& body);

  // The following run inside Transaction only.
  //
  // The keyed hash under which (sender, case_ref) is filed (16 bytes): the
  // file does not reveal which cases it holds.
  std::string CaseId(const std::string& sender, const std::string& case_ref) const;
  // `data` sealed under the case's key (made now if the case has none), with
  // `row` (what identifies the row, e.g. the message id) authenticated.
  StatusOr<std::vector<uint8_t>> Seal(const std::string& sender, const std::string& case_id, const std::string& row,
                                      std::span<const uint8_t> data);
  // The bytes; nullopt if they do not open: the case's key was destroyed
  // (the case was erased), or they are another row's.
  StatusOr<std::optional<std::vector<uint8_t>>> Unseal(const std::string& sender, const std::string& case_id,
                                                       const std::string& row, std::span<const uint8_t> sealed);
  // Destroys the case's key; false if it had none. Rows sealed under it no
  // longer open; a later Seal of the case makes a new key.
  StatusOr<bool> Shred(const std::string& sender, const std::string& case_id);

  const std::string& key_file() const { return files_.key_file; }
  const std::string& ring_file() const { return files_.ring_file; }

 private:
  CaseVault() = default;
  Status Exec(const char* sql);
  StatusOr<std::optional<std::pair<uint64_t, std::vector<uint8_t>>>> ReadEpoch();
  Status WriteEpoch(uint64_t epoch);
  Status CheckKey();
  Status Settle();
  Status Adopt(uint64_t file_epoch);
  Status Rotate();
  StatusOr<std::optional<CaseKey>> FindKey(const std::string& sender, const std::string& case_id);

  sqlite3* db_ = nullptr;  // not owned
  std::string db_path_;
  Files files_;
  StoreKey key_{};
  std::shared_ptr<CaseKeyRing> ring_;
  bool in_transaction_ = false;
  bool shredded_ = false;        // this transaction destroyed a key
  uint64_t staged_epoch_ = 0;    // the ring's staged epoch, until commit or rollback
  std::map<std::string, CaseKey> keys_;  // sender + '\0' + case id -> key, this transaction's
};

}  // namespace liaison

#endif  // LIAISON_CASE_VAULT_H_
