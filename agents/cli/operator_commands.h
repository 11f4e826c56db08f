// `liaison status | queues | backup | restore`: the operator's view of a
// running broker (over its admin socket), and its backups.
#ifndef LIAISON_AGENTS_CLI_OPERATOR_COMMANDS_H_
#define LIAISON_AGENTS_CLI_OPERATOR_COMMANDS_H_

#include <string>

namespace liaison::cli {

// Where the broker is: its admin socket, given directly or read from
// broker.yaml (admin.socket).
struct BrokerTarget {
  std::string config = "/etc/liaison/broker.yaml";
  std::string socket;  // overrides the config's admin.socket
};

// Exit codes: 0 OK, 1 the broker did not answer or refused, 2 bad
// arguments or config.
int StatusCommand(const BrokerTarget& target, bool json);
int QueuesCommand(const BrokerTarget& target, const std::string& recipient, int limit, bool json);
// Purges (or requeues) the set-aside copies `seqs` ("all", or "S1,S2,...")
// of `recipient`; prints what was done. Exit 1 also when some seq was not a
// set-aside copy of the recipient (the others are done).
int SetAsideCommand(const BrokerTarget& target, const std::string& recipient, bool requeue, const std::string& seqs,
                    bool json);

// Copies the store (SQLite online backup) and then the ledger of the broker
// configured in `config` into the new folder `out`, with a MANIFEST of
// sizes and SHA-256 sums. Safe while the broker runs.
int BackupCommand(const std::string& config, const std::string& out);
// Puts the backup in `from` in place of the store and ledger named in
// `config`, which must not exist (the broker stopped, damaged files moved
// away). Checks the MANIFEST first.
int RestoreCommand(const std::string& config, const std::string& from);

}  // namespace liaison::cli

#endif  // LIAISON_AGENTS_CLI_OPERATOR_COMMANDS_H_
