// Per-case keys, so that erasing a case can shred it (docs/audit.md,
// "Erasure that shreds"). Every queued copy of a case is sealed under that
// case's own random key; the store keeps the key wrapped in its case_keys
// table, written in the same transaction as the copies that use it. The
// wrapping key (the key-encryption key, KEK) is not in the database: it is
// in the case-key ring, a small file beside the store key, so that a backup
// of the database alone never holds what opens its case keys.
//
// Shredding a case deletes its key row and moves the ring to a new epoch:
// a fresh KEK re-wraps every other case key (in the same transaction), the
// ring also keeps those re-wrapped keys (its snapshot, which is what opens
// an older backup's copies of the surviving cases), and the previous KEK is
// destroyed once the transaction committed. A backup taken before the
// erasure holds the erased case's key wrapped only under a KEK that no
// longer exists: with the store key and the current ring it opens every
// other case and none of the erased one's.
//
// In liaison_common because the agents' own files (the outbox, the gateway's
// state file) are shredded the same way: there the "store key" below is that
// file's key (liaison/case_vault.h).
#ifndef LIAISON_CASE_KEYS_H_
#define LIAISON_CASE_KEYS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "liaison/status.h"
#include "liaison/sealing.h"

namespace liaison {

using CaseKey = SecretKey32;

// What a case-key row's wrapping authenticates beside the key: which case
// of which sender, under which epoch's KEK.
std::string CaseKeyAad(const std::string& sender, const std::string& case_hash, uint64_t epoch);
std::optional<std::vector<uint8_t>> WrapCaseKey(const SecretKey32& kek, const std::string& sender,
                                                const std::string& case_hash, uint64_t epoch, const CaseKey& key);
std::optional<CaseKey> UnwrapCaseKey(const SecretKey32& kek, const std::string& sender, const std::string& case_hash,
                                     uint64_t epoch, const std::vector<uint8_t>& wrapped);
// What a copy sealed under its case key authenticates: CopyAad, marked so
// that a copy sealed under the store key never opens as a case-key copy.
std::string CaseCopyAad(const std::string& sender, const std::string& message_id, const std::string& recipient);

// The ring file: "liaison-case-key-ring 1", then "kek <epoch> <hex>" lines
// (the KEK sealed under the store key; two only between a rotation's stage
// and its commit), then "key <epoch> <hex sender> <hex case hash> <hex
// wrapped>" lines, the snapshot of the case keys at the last rotation.
// Mode 0600; replaced as a whole (new file, fsync, rename, directory fsync),
// the replaced file overwritten with zeros first.
//
// Thread-safe: one object per process, shared by all its connections to the
// store. Only the store's writer rotates it.
class CaseKeyRing {
 public:
  // Opens the ring at `path`, creating it (epoch 1, a fresh KEK) if it does
  // not exist. Fails if it does not open under `store_key`.
  static StatusOr<std::shared_ptr<CaseKeyRing>> Open(const std::string& path, const StoreKey& store_key);

  const std::string& path() const { return path_; }
  // The epoch new case keys are wrapped under.
  uint64_t epoch() const;
  // The KEK of `epoch`; the file is read again if this object does not hold
  // it (another process rotated the ring). nullopt: destroyed or unknown.
  std::optional<SecretKey32> Kek(uint64_t epoch);
  // The snapshot's wrapped key of (sender, case hash), with its epoch.
  std::optional<std::pair<uint64_t, std::vector<uint8_t>>> Snapshot(const std::string& sender,
                                                                    const std::string& case_hash);

  // A rotation. Stage makes the next epoch's KEK, wraps `keys` (sender +
  // '\0' + case hash -> key) under it, and writes the ring with both KEKs
  // and the new snapshot before the store commits; the store writes the
  // returned wrappings in its transaction. Retire (below, after the store's
  // commit) destroys the old KEK; Abandon (after a failed commit) forgets
  // the new.
  struct Staged {
    uint64_t epoch = 0;
    SecretKey32 kek{};
    std::map<std::string, std::vector<uint8_t>> wrapped;  // by sender + '\0' + case hash
  };
  StatusOr<Staged> Stage(const std::map<std::string, CaseKey>& keys);
  void Abandon(uint64_t epoch);
  // What both backends and the agents' case vault call after every
  // successful commit: `staged` is the epoch the commit held (0: no
  // rotation). Commits it; or, without one, retries an earlier retirement
  // that failed. A failure is logged and owed to the next call: the old
  // KEK stays in the file meanwhile, so the erased case still opens in
  // earlier backups until a later commit succeeds.
  // True when a rotation's old KEK is gone.
  bool Retire(uint64_t staged);
  // At a writer's first batch: the store says which epoch its rows are
  // under. A ring that still holds a staged epoch beside it keeps only that
  // one; a ring without it is an error (the wrong ring, or a lost one).
  Status Settle(uint64_t store_epoch);

 private:
  CaseKeyRing(std::string path, const StoreKey& store_key) : path_(std::move(path)), store_key_(store_key) {}
  Status LoadLocked();
  Status WriteLocked();
  void KeepOnlyLocked(uint64_t epoch);

  const std::string path_;
  const StoreKey store_key_;
  mutable std::mutex mutex_;
  std::map<uint64_t, SecretKey32> keks_;                    // guarded by mutex_
  uint64_t current_ = 0;                                     // guarded by mutex_
  bool retire_owed_ = false;                                 // guarded by mutex_; see Retire
  // Per epoch: sender + '\0' + case hash -> wrapped key. Two epochs only
  // between Stage and Retire.
  std::map<uint64_t, std::map<std::string, std::vector<uint8_t>>> snapshots_;  // guarded by mutex_
};

// What a store keeps (meta) to tell that a ring's KEK of `epoch` is the one
// its case keys are wrapped under: sealed under that KEK.
std::optional<std::vector<uint8_t>> SealKekCheck(const SecretKey32& kek, uint64_t epoch);
bool KekCheckOpens(const SecretKey32& kek, uint64_t epoch, const std::vector<uint8_t>& sealed);

// A queued copy's bytes, as every backend opens them: under its case key
// (the store's wrapped row of `epoch`, or, for a backup's row under a
// destroyed KEK, the ring's snapshot), else under the store key (copies
// from before case keys, an erasure's own copies); nullopt if nothing
// opens it. `ring` may be null (then only the store key).
std::optional<std::vector<uint8_t>> OpenCopy(CaseKeyRing* ring, const StoreKey& store_key, const std::string& sender,
                                             const std::string& message_id, const std::string& recipient,
                                             const std::string& case_hash, std::optional<uint64_t> epoch,
                                             const std::vector<uint8_t>& wrapped, const std::vector<uint8_t>& sealed);

// At a store's open: `ring` against the epoch and check the store keeps
// (nullopt: no case key yet). Fails if the ring is another store's or older
// than the store; a newer ring (a restored backup) is fine.
Status CheckRing(CaseKeyRing& ring, const std::string& where,
                 const std::optional<std::pair<uint64_t, std::vector<uint8_t>>>& store_epoch);

// Where the ring of the store whose key file is `store_key_file` is unless
// configured otherwise: beside it, "<key file>.ring".
std::string DefaultCaseKeyRingPath(const std::string& store_key_file);

}  // namespace liaison

#endif  // LIAISON_CASE_KEYS_H_
