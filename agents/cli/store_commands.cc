#include "store_commands.h"

#include <fstream>
#include <memory>
#include <utility>
#include <iostream>

#include "config/broker_config.h"
#include "liaison/keys.h"
#include "postgres/pg_store.h"
#include "sqlite/sqlite_store.h"

namespace liaison::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int Fail(const std::string& what, int code) {
  std::cerr << "liaison: store migrate: " << what << "\n";
  return code;
}

// The database password: the first line of an owner-only file.
StatusOr<std::string> ReadPassword(const std::string& path) {
  LIAISON_RETURN_IF_ERROR(
      CheckSecretFile(path, "--password-file " + path, "printf '%s\\n' PASSWORD > FILE; chmod 600 FILE"));
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return Status::InvalidArgument("cannot read " + path + " (it holds the database password on its first line)");
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) return Status::InvalidArgument(path + " is empty: its first line is the database password");
  return line;
}

// Hands each part of the SQLite export to the import. The import begins at
// the first part (or after an export of no rows), so that the SQLite
// store's lock and key are checked before the database is touched: a wrong
// key must not leave its key check in a new database.
class Forward final : public store::RowSink {
 public:
  Forward(store::PgConnectOptions target, const store::StoreKey& key) : target_(std::move(target)), key_(key) {}
  Status Put(const store::Rows& rows) override {
    LIAISON_RETURN_IF_ERROR(Begin());
    return import_->Put(rows);
  }
  Status Begin() {
    if (import_) return Status::Ok();
    auto begun = store::PgImport::Begin(target_, key_);
    if (!begun.ok()) return begun.status();
    import_ = std::move(*begun);
    return Status::Ok();
  }
  store::PgImport* import() const { return import_.get(); }

 private:
  store::PgConnectOptions target_;
  store::StoreKey key_;
  std::unique_ptr<store::PgImport> import_;
};

}  // namespace

int StoreMigrateCommand(const StoreMigrateOptions& o) {
  if (o.from != "sqlite" || o.to != "postgresql") {
    return Fail("only --from sqlite --to postgresql is supported (got --from " + o.from + " --to " + o.to + ")",
                kExitUsage);
  }
  std::string sqlite_path = o.sqlite_path, key_file = o.store_key_file, ledger_hint;
  if (!o.config.empty()) {
    auto config = broker::LoadBrokerConfig(o.config);
    if (!config.ok()) return Fail(config.status().message(), kExitUsage);
    if (config->store.backend != "sqlite") {
      return Fail(o.config + ": store.backend is " + config->store.backend +
                      ": --config names the broker.yaml of the SQLite deployment being migrated",
                  kExitUsage);
    }
    if (sqlite_path.empty()) sqlite_path = config->store.path;
    if (key_file.empty()) key_file = config->store.key_file;
    ledger_hint = config->ledger.path;
  }
  if (sqlite_path.empty() || key_file.empty()) {
    return Fail("name the SQLite store: --config BROKER.YAML, or --sqlite PATH --store-key FILE", kExitUsage);
  }
  if (o.url.empty()) {
    return Fail("name the PostgreSQL database: --url postgresql://USER@HOST:PORT/DB (an empty database)",
                kExitUsage);
  }
  auto key = LoadStoreKey(key_file);
  if (!key.ok()) return Fail(key.status().message(), kExitUsage);
  store::PgConnectOptions target{o.url, ""};
  if (!o.password_file.empty()) {
    auto password = ReadPassword(o.password_file);
    if (!password.ok()) return Fail(password.status().message(), kExitUsage);
    target.password = *password;
  }

  Forward forward(target, *key);
  auto totals = store::SqliteStore::Export(sqlite_path, *key, &forward);
  if (!totals.ok()) {
    return Fail(store::MaskPassword(totals.status().message(), target) + " (nothing was migrated)", kExitFailure);
  }
  if (Status begun = forward.Begin(); !begun.ok()) {
    return Fail(store::MaskPassword(begun.message(), target) + " (nothing was migrated)", kExitFailure);
  }
  auto found = forward.import()->Commit(*totals);
  if (!found.ok()) return Fail(store::MaskPassword(found.status().message(), target), kExitFailure);
  std::cout << "migrated " << sqlite_path << " into " << forward.import()->where() << " in one transaction\n"
            << "rows copied and counted: " << found->ToString() << "; ledger position "
            << (totals->ledger_position ? std::to_string(*totals->ledger_position) : std::string("none")) << "\n"
            << "next: in broker.yaml set store: {backend: postgresql, url: ..., password_file: ...} (keep "
               "store.key_file and the ledger), move "
            << sqlite_path << " away so that no broker starts on it again, start the broker, then run "
            << "liaison audit verify --ledger " << (ledger_hint.empty() ? std::string("LEDGER") : ledger_hint)
            << " --public-key ledger-signing.pub\n";
  return kExitOk;
}

}  // namespace liaison::cli
