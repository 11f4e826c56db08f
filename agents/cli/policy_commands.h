// `liaison policy check|explain|test|install`: the data-protection officer's
// and the operator's tools.
#ifndef LIAISON_AGENTS_CLI_POLICY_COMMANDS_H_
#define LIAISON_AGENTS_CLI_POLICY_COMMANDS_H_

#include <cstdint>
#include <string>

namespace liaison::cli {

// Each returns the process exit code: 0 success, 1 the policies (or tests)
// fail, 2 bad arguments or unreadable input.
int PolicyCheck(const std::string& dir);
// `json`: one explain::Explanation (schemas/explain.fbs) as JSON instead of text.
int PolicyExplain(const std::string& dir, const std::string& from, const std::string& to,
                  const std::string& message_file, const std::string& pseudonym_key_file,
                  bool json);
int PolicyTest(const std::string& dir);
// Checks STAGED as the broker would load it (and its DPO signatures against
// `pins_file`, if given), then replaces LIVE with a copy of it in one step
// (rename(2) with RENAME_EXCHANGE of a sibling copy), so that a broker
// reloading LIVE sees the old set or the new one, never a mix. On any
// failure LIVE is left untouched. 0 installed, 1 refused, 2 bad arguments.
int PolicyInstall(const std::string& staged, const std::string& live, const std::string& pins_file,
                  uint64_t quorum);

}  // namespace liaison::cli

#endif  // LIAISON_AGENTS_CLI_POLICY_COMMANDS_H_
