// `liaison policy diff OLD NEW`: the impact preview of a policy change
// (explain/policy_diff.h) as text, JSON or one HTML page.
#ifndef LIAISON_AGENTS_CLI_DIFF_COMMAND_H_
#define LIAISON_AGENTS_CLI_DIFF_COMMAND_H_

#include <string>

namespace liaison::cli {

struct DiffOptions {
  std::string before_dir, after_dir;
  std::string ledger, since = "30d";  // flows seen in the ledger since then
  std::string messages_dir;           // default: AFTER/tests/messages, else BEFORE's
  std::string html;                   // also write the page here
  bool json = false;
};

// Exit codes: 0 nothing newly shared, 3 something widens, 1 a set does not
// load, 2 usage.
inline constexpr int kExitWidens = 3;
int PolicyDiffCommand(const DiffOptions& options);

}  // namespace liaison::cli

#endif  // LIAISON_AGENTS_CLI_DIFF_COMMAND_H_
