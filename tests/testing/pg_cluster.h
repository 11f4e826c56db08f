// A PostgreSQL cluster of the test's own: initdb and pg_ctl (Debian's
// postgresql-15) in a temporary folder, listening on a free loopback port
// only, with password (scram-sha-256) authentication, stopped and removed
// when the object goes. Never the system's instance.
//
// initdb refuses to run as root: when the tests run as root (CI), the
// cluster's files belong to `nobody` and its programs run as that user
// (setpriv); otherwise they run as the current user.
#ifndef LIAISON_TESTS_TESTING_PG_CLUSTER_H_
#define LIAISON_TESTS_TESTING_PG_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "liaison/status.h"

namespace liaison::testing {

class PgCluster {
 public:
  // The folder with initdb, pg_ctl and postgres ($LIAISON_PG_BINDIR if set,
  // else `pg_config --bindir`, else /usr/lib/postgresql/<newest>/bin);
  // empty if PostgreSQL is not installed.
  static std::string FindBinDir();

  // Creates and starts a cluster (bounded: pg_ctl waits at most 60 s).
  static StatusOr<std::unique_ptr<PgCluster>> Start();
  // The process's one cluster, started at the first call and stopped at
  // exit; nullptr with `*why` set when it cannot start (`*why` says why).
  static PgCluster* Shared(std::string* why);

  ~PgCluster();  // pg_ctl stop -m fast (then immediate), and the folder goes
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  int port() const { return port_; }
  const std::string& user() const { return user_; }
  const std::string& password() const { return password_; }
  // A new, empty database; returns its URL (without the password), e.g.
  // postgresql://liaison@127.0.0.1:PORT/NAME?sslmode=disable.
  StatusOr<std::string> CreateDatabase(const std::string& name);
  std::string Url(const std::string& database) const;
  // Stops the server (pg_ctl stop -m fast: every session ends) and starts
  // it again on the same port, data kept: the database going away and
  // coming back. Bounded by pg_ctl's waits (30 s, 60 s).
  Status StopServer();
  Status StartServer();
  // The server's log, for a failing test's message.
  std::string Log() const;

 private:
  PgCluster() = default;
  Status RunAsOwner(const std::vector<std::string>& argv, std::string* output) const;

  std::string bin_dir_, dir_, data_dir_, log_path_;
  std::string user_ = "liaison";
  std::string password_;
  int port_ = 0;
  std::string server_options_;  // pg_ctl -o, for StartServer
  int owner_uid_ = -1, owner_gid_ = -1;  // -1: this process's own
  bool running_ = false;
};

}  // namespace liaison::testing

#endif  // LIAISON_TESTS_TESTING_PG_CLUSTER_H_
