// The store of the brokers the integration and adversarial suites start,
// chosen by the environment, so that one suite runs on both backends
// (`make test-ha`, ctest label postgres):
//
//   LIAISON_TEST_STORE unset, empty or `sqlite`: the embedded SQLite file
//   in the broker's folder (broker.yaml's default).
//   LIAISON_TEST_STORE=postgresql: a database of this process's one
//   PostgreSQL cluster (PgCluster::Shared, started at the first broker and
//   stopped at exit), one per broker folder.
#ifndef LIAISON_TESTS_TESTING_TEST_STORE_H_
#define LIAISON_TESTS_TESTING_TEST_STORE_H_

#include <string>
#include <vector>

namespace liaison::testing {

// The exit code of a run whose store cannot exist here (PostgreSQL asked
// for, its server programs not installed): ctest's SKIP_RETURN_CODE.
inline constexpr int kStoreUnavailableExitCode = 77;

// broker.yaml's store location for a broker kept in `dir` (the lines
// under `store:`, unindented), or "" for the SQLite default. On
// PostgreSQL, the database belongs to the folder as a SQLite file would:
// a broker made again on the same folder (a restart) gets the same
// database back, a new folder gets a new, empty one, and the databases of
// folders that are gone are dropped. The password goes in an owner-only
// file in `dir`.
//
// Throws std::runtime_error when LIAISON_TEST_STORE names no backend or the
// cluster or database cannot be made; exits the process with
// kStoreUnavailableExitCode, saying why, when PostgreSQL is not installed.
std::string TestStoreSettings(const std::string& dir);

// The files that hold the store of the broker kept in `dir`, for a test
// that looks for plaintext in them: the SQLite file and its WAL; on
// PostgreSQL, after a CHECKPOINT, every file of the cluster's data
// directory (the tables' files and the WAL; the cluster is this process's,
// so they hold other tests' databases too). Throws std::runtime_error if
// the checkpoint fails.
std::vector<std::string> TestStoreFiles(const std::string& dir);

}  // namespace liaison::testing

#endif  // LIAISON_TESTS_TESTING_TEST_STORE_H_
