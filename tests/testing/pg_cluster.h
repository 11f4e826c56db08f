// A PostgreSQL cluster of the test's own: initdb and pg_ctl (Debian's
// postgresql-15) in a temporary folder, listening on a free loopback port
// only, with password (scram-sha-256) authentication, stopped and removed
// when the object goes. Never the system's instance.
//
// A cluster can have a streaming standby (StartStandby: pg_basebackup -R
// from it, on a port of its own), made synchronous
// (RequireSynchronousStandby), and be killed as a machine dies (Kill:
// SIGKILL to every one of its processes) for the standby to be promoted
// (Promote), as docs/operations.md's "High availability" describes.
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
  // `settings`: server settings ("name=value") beyond the defaults, kept
  // for every later start.
  static StatusOr<std::unique_ptr<PgCluster>> Start(const std::vector<std::string>& settings = {});
  // The process's one cluster, started at the first call and stopped at
  // exit; nullptr with `*why` set when it cannot start (`*why` says why).
  static PgCluster* Shared(std::string* why);

  ~PgCluster();  // pg_ctl stop -m fast (then immediate), and the folder goes
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  int port() const { return port_; }
  // The server's data directory (its tables' files and pg_wal/).
  const std::string& data_dir() const { return data_dir_; }
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
  Status RestartServer();
  // The server's log, for a failing test's message.
  std::string Log() const;

  // A standby of this cluster: a base backup taken from it with
  // pg_basebackup -R (a standby.signal and primary_conninfo naming this
  // cluster, as `application_name`), started on its own free loopback port.
  // Bounded: pg_basebackup and pg_ctl wait at most 60 s each.
  StatusOr<std::unique_ptr<PgCluster>> StartStandby(const std::string& application_name = "liaison_standby");
  // Makes the standby `application_name` synchronous (ALTER SYSTEM SET
  // synchronous_standby_names, synchronous_commit = on, reloaded), then
  // waits (at most 30 s) until pg_stat_replication shows it streaming as
  // `sync`: from then on a commit returns only once the standby has it.
  Status RequireSynchronousStandby(const std::string& application_name = "liaison_standby");
  // SIGKILL to the postmaster and every process it started, at once, as a
  // machine that dies: no shutdown checkpoint, connections cut. Waits (at
  // most 10 s) until the postmaster is gone. The folder stays until the
  // object goes.
  Status Kill();
  // pg_ctl promote on a standby, waiting (at most 60 s) until it accepts
  // writes.
  Status Promote();
  // The first value of `sql`'s result in `database`, as text.
  StatusOr<std::string> QueryValue(const std::string& database, const std::string& sql) const;

 private:
  PgCluster() = default;
  // Picks a free port and starts the server in data_dir_ (five tries).
  Status StartServer();
  Status RunAsOwner(const std::vector<std::string>& argv, std::string* output) const;

  std::string bin_dir_, dir_, data_dir_, log_path_;
  std::string user_ = "liaison";
  std::string password_;
  int port_ = 0;
  std::vector<std::string> settings_;  // Start's
  std::string server_options_;  // pg_ctl -o of the last start, for RestartServer
  int owner_uid_ = -1, owner_gid_ = -1;  // -1: this process's own
  bool running_ = false;
};

}  // namespace liaison::testing

#endif  // LIAISON_TESTS_TESTING_PG_CLUSTER_H_
