// The store's per-case keys and their ring: liaison/case_keys.h, shared with
// the agents (their outbox and the gateway's state file shred the same
// way). The store's names for it, for the backends.
#ifndef LIAISON_BROKER_STORE_CASE_KEYS_H_
#define LIAISON_BROKER_STORE_CASE_KEYS_H_

#include "liaison/case_keys.h"
#include "store/sealing.h"

namespace liaison::store {

using liaison::CaseKey;
using liaison::CaseKeyRing;
using liaison::CheckRing;
using liaison::DefaultCaseKeyRingPath;

}  // namespace liaison::store

#endif  // LIAISON_BROKER_STORE_CASE_KEYS_H_
