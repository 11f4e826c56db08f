// `liaison policy check|explain|test`: the data-protection officer's tools.
#ifndef LIAISON_AGENTS_CLI_POLICY_COMMANDS_H_
#define LIAISON_AGENTS_CLI_POLICY_COMMANDS_H_

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

}  // namespace liaison::cli

#endif  // LIAISON_AGENTS_CLI_POLICY_COMMANDS_H_
