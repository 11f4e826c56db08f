// What `--version` prints for every liaison binary: the release, the source
// it was built from (git describe), the compiler, and the versions of the
// libraries the binary runs with (ZeroMQ, OpenSSL, SQLite) as they report
// themselves at run time, not as they were when it was compiled.
#ifndef LIAISON_VERSION_H_
#define LIAISON_VERSION_H_

#include <string>
#include <string_view>

namespace liaison {

// "0.1.0".
std::string_view ReleaseVersion();
// "git describe --always --dirty" of the build's source tree ("unknown"
// outside a git checkout).
std::string_view SourceVersion();
// Several lines, the first "PROGRAM RELEASE (SOURCE)".
std::string VersionText(std::string_view program);

}  // namespace liaison

#endif  // LIAISON_VERSION_H_
