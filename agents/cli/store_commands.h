// `liaison store migrate`: moves a stopped broker's SQLite store into an
// empty PostgreSQL database (docs/operations.md, "High availability").
#ifndef LIAISON_AGENTS_CLI_STORE_COMMANDS_H_
#define LIAISON_AGENTS_CLI_STORE_COMMANDS_H_

#include <string>

namespace liaison::cli {

struct StoreMigrateOptions {
  std::string from = "sqlite", to = "postgresql";
  // The source: the SQLite deployment's broker.yaml (store.path,
  // store.key_file), or the two given directly.
  std::string config;
  std::string sqlite_path, store_key_file;
  // The target: a libpq URL (multi-host allowed) and the file holding its
  // password (first line; optional).
  std::string url, password_file;
};

// Exit codes: 0 migrated and checked; 1 refused or failed (the store in
// use, the database not empty, a copy that does not match: nothing
// migrated); 2 bad arguments or config.
int StoreMigrateCommand(const StoreMigrateOptions& options);

}  // namespace liaison::cli

#endif  // LIAISON_AGENTS_CLI_STORE_COMMANDS_H_
