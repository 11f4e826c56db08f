// Sealing at rest (AES-256-GCM), shared by the broker's store backends and
// the agents' files (outbox, gateway state). For the broker: how every
// storage backend keeps a queued copy, so that the bytes a backend holds
// mean the same in any backend (a store migrated from one to another moves
// them as they are): AES-256-GCM under the store key, with
// the copy's (sender, message id, recipient) authenticated, so that a copy
// moved to another row does not open; and case references kept only as a
// keyed hash, so that the database does not reveal which cases it holds.
#ifndef LIAISON_SEALING_H_
#define LIAISON_SEALING_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "liaison/keys.h"

namespace liaison {

// The AES-256-GCM key of the rows at rest; its file: LoadStoreKey in
// liaison/keys.h.
using StoreKey = SecretKey32;

// nonce || ciphertext || tag, with `aad` authenticated; nullopt if OpenSSL
// fails (no random nonce, no cipher): nothing unsealable is ever stored.
std::optional<std::vector<uint8_t>> Seal(const StoreKey& key, const std::string& aad, const uint8_t* data,
                                         size_t size);
// nullopt if the data or its authentication is wrong (another key, another
// row's copy, a changed byte).
std::optional<std::vector<uint8_t>> Unseal(const StoreKey& key, const std::string& aad, const uint8_t* sealed,
                                           size_t size);
// What a queued copy's seal authenticates beside its bytes.
std::string CopyAad(const std::string& sender, const std::string& message_id, const std::string& recipient);
// The 16-byte keyed hash under which a backend files `sender`'s `case_ref`.
std::string CaseHash(const StoreKey& key, const std::string& sender, const std::string& case_ref);

// The sealed text a store keeps to tell, at open, whether it was given the
// key it was made with (a wrong key file must not queue copies that no later
// start can open).
std::optional<std::vector<uint8_t>> SealKeyCheck(const StoreKey& key);
bool KeyCheckOpens(const StoreKey& key, const std::vector<uint8_t>& sealed);

}  // namespace liaison

#endif  // LIAISON_SEALING_H_
