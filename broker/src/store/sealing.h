// How the store seals queued copies at rest: liaison/sealing.h, shared with
// the agents (their outbox and the gateway's state file seal the same way).
// The store's names for it, for the backends.
#ifndef LIAISON_BROKER_STORE_SEALING_H_
#define LIAISON_BROKER_STORE_SEALING_H_

#include "liaison/sealing.h"

namespace liaison::store {

using liaison::StoreKey;

}  // namespace liaison::store

#endif  // LIAISON_BROKER_STORE_SEALING_H_
