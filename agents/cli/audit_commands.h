// `liaison audit verify|query`: the DPO's and auditor's view of the ledger.
#ifndef LIAISON_AGENTS_CLI_AUDIT_COMMANDS_H_
#define LIAISON_AGENTS_CLI_AUDIT_COMMANDS_H_

#include <string>

namespace liaison::cli {

struct AuditQuery {
  std::string ledger;
  std::string case_ref, sender, pseudonym_key;  // --case needs the sender and the pseudonym key
  std::string agency, rule, decision, since, until;
  std::string format = "table";  // table, json, csv
  std::string policy_history;    // an agency id (or "vocabulary"): its policy events instead
  std::string thread;            // a thread id (a record's `thread`): that case thread's whole path
};

// Exit codes: 0 OK, 1 the ledger fails verification, 2 bad arguments/files.
int AuditVerify(const std::string& ledger, const std::string& public_key);
int AuditQueryCommand(const AuditQuery& q);

}  // namespace liaison::cli

#endif  // LIAISON_AGENTS_CLI_AUDIT_COMMANDS_H_
