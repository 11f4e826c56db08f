// Durability under crashes on the embedded store (SQLite): see crash_run.h.
// LIAISON_CRASH_MESSAGES and LIAISON_CRASH_KILLS size it (defaults for
// `make test`: 10,000 messages, 3 kills; `make soak`: 100,000 and 10).
#include <gtest/gtest.h>

#include "integration/crash_run.h"

namespace liaison::testing {
namespace {

TEST(CrashTest, EveryStoredMessageArrivesExactlyOnceAcrossKills) {
  CrashRunOptions options;
  options.total = EnvInt("LIAISON_CRASH_MESSAGES", 10000);
  options.kills = EnvInt("LIAISON_CRASH_KILLS", 3);
  options.senders = EnvInt("LIAISON_CRASH_SENDERS", 16);
  RunCrashTest(options);
}

}  // namespace
}  // namespace liaison::testing
