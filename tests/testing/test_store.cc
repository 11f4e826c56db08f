#include "testing/test_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <stdexcept>

#include "testing/fixtures.h"
#include "testing/pg_cluster.h"

namespace liaison::testing {
namespace {

// Which database a broker folder holds: a file beside the broker's files,
// so that the folder, not the object that wrote broker.yaml, owns the
// store, as with SQLite's liaison.db.
constexpr const char* kDatabaseFile = "store.postgresql";

std::string Trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// Databases by the folder they belong to; a folder gone (its TempDir
// destroyed, the test over) lets its database go too, so that a suite of
// a hundred tests does not leave a hundred copies of template1 behind.
std::mutex registry_mu;
std::map<std::string, std::string>& Registry() {
  static std::map<std::string, std::string> databases;
  return databases;
}

void DropDatabasesOfGoneFolders(PgCluster* cluster) {
  auto& databases = Registry();
  for (auto it = databases.begin(); it != databases.end();) {
    if (std::filesystem::exists(it->first)) {
      ++it;
      continue;
    }
    // FORCE: a broker the test killed may have left a session ending.
    auto dropped = cluster->QueryValue("postgres", "DROP DATABASE IF EXISTS \"" + it->second + "\" WITH (FORCE)");
    if (!dropped.ok()) std::cerr << "test store: " << dropped.status().ToString() << "\n";
    it = databases.erase(it);
  }
}

std::string PostgresSettings(const std::string& dir) {
  std::string why;
  PgCluster* cluster = PgCluster::Shared(&why);
  if (!cluster) {
    if (PgCluster::FindBinDir().empty()) {
      std::cerr << "LIAISON_TEST_STORE=postgresql, but " << why << ": skipped\n";
      std::exit(kStoreUnavailableExitCode);
    }
    throw std::runtime_error("LIAISON_TEST_STORE=postgresql: the test's PostgreSQL cluster did not start: " + why);
  }
  std::lock_guard<std::mutex> lock(registry_mu);
  DropDatabasesOfGoneFolders(cluster);
  const std::string database_file = dir + "/" + kDatabaseFile;
  std::string database = Trimmed(ReadText(database_file));
  if (database.empty()) {
    static int next = 0;
    database = "broker_" + std::to_string(::getpid()) + "_" + std::to_string(next++);
    auto url = cluster->CreateDatabase(database);
    if (!url.ok()) throw std::runtime_error("LIAISON_TEST_STORE=postgresql: " + url.status().ToString());
    WriteText(database_file, database + "\n");
    Registry()[dir] = database;
  }
  const std::string password_file = dir + "/db.password";
  WriteText(password_file, cluster->password() + "\n");
  if (::chmod(password_file.c_str(), 0600) != 0) {
    throw std::runtime_error("chmod 0600 " + password_file + " failed");
  }
  return "backend: postgresql\nurl: \"" + cluster->Url(database) + "\"\npassword_file: " + password_file + "\n";
}

}  // namespace

std::string TestStoreSettings(const std::string& dir) {
  const char* backend = std::getenv("LIAISON_TEST_STORE");
  const std::string name = backend ? backend : "";
  if (name.empty() || name == "sqlite") return "";
  if (name == "postgresql") return PostgresSettings(dir);
  throw std::runtime_error("LIAISON_TEST_STORE=" + name + ": the test store is sqlite (the default) or postgresql");
}

std::vector<std::string> TestStoreFiles(const std::string& dir) {
  if (!std::filesystem::exists(dir + "/" + kDatabaseFile)) return {dir + "/liaison.db", dir + "/liaison.db-wal"};
  std::string why;
  PgCluster* cluster = PgCluster::Shared(&why);
  if (!cluster) throw std::runtime_error("the test's PostgreSQL cluster: " + why);
  // Committed rows are in the WAL already; the checkpoint writes them to
  // the tables' files as well.
  auto checkpoint = cluster->QueryValue("postgres", "CHECKPOINT");
  if (!checkpoint.ok()) throw std::runtime_error(checkpoint.status().ToString());
  std::vector<std::string> files;
  std::error_code ec;
  for (std::filesystem::recursive_directory_iterator it(cluster->data_dir(), ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->is_regular_file(ec)) files.push_back(it->path().string());
  }
  if (ec) throw std::runtime_error("listing " + cluster->data_dir() + ": " + ec.message());
  return files;
}

}  // namespace liaison::testing
