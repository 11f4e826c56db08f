// Durability under crashes: a stream of messages while the broker is killed
// with SIGKILL at chosen moments and restarted. Every message whose sender
// saw "stored" must reach the recipient application exactly once, whatever
// the store (the SQLite file, or PostgreSQL in tests/postgres/).
#ifndef LIAISON_TESTS_INTEGRATION_CRASH_RUN_H_
#define LIAISON_TESTS_INTEGRATION_CRASH_RUN_H_

#include <string>

namespace liaison::testing {

struct CrashRunOptions {
  int total = 10000;   // messages
  int kills = 3;       // SIGKILLs of the broker, each followed by a restart
  int senders = 16;    // sender connections
  // broker.yaml's store location (BrokerProcess's store_settings; empty:
  // the SQLite file) and its name in the printed summary.
  std::string store_settings;
  std::string store_name = "sqlite";
  // High availability (a PostgreSQL store_settings with a lease): two
  // brokers on the store, one active and one standby, and agents that know
  // both endpoints. Each kill is of the active broker; the killed one is
  // restarted (as the standby) once the other has taken over, and the time
  // from each kill to the next "stored" receipt is printed.
  bool standby_pair = false;
};

// Runs the stream with GoogleTest assertions; call it from a TEST.
void RunCrashTest(const CrashRunOptions& options);

// The environment variable `name` as a number, or `fallback`.
int EnvInt(const char* name, int fallback);

}  // namespace liaison::testing

#endif  // LIAISON_TESTS_INTEGRATION_CRASH_RUN_H_
