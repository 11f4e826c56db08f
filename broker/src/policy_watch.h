// Turns changes in the policies folder into reloads, as they happen rather
// than by polling: inotify on the folder, its agencies/ and dpo-keys/
// sub-folders (IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_DELETE,
// IN_MOVED_FROM on the files a policy set is made of), and on its parent
// for the folder itself being replaced in one rename, as `liaison policy
// install` does. A change counts once the folder has been quiet for a
// moment, so that a set being copied is not read half. Used by main.cc
// only; where inotify is not available the broker polls instead.
#ifndef LIAISON_BROKER_POLICY_WATCH_H_
#define LIAISON_BROKER_POLICY_WATCH_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "liaison/status.h"

namespace liaison::broker {

class PolicyWatch {
 public:
  // Watches `dir`; calls `on_change` on the watch's own thread after each
  // settled change. Fails if inotify cannot be set up (no instance left,
  // the folder missing).
  static StatusOr<std::unique_ptr<PolicyWatch>> Start(const std::string& dir, std::function<void()> on_change);
  ~PolicyWatch();  // stops the thread

  PolicyWatch(const PolicyWatch&) = delete;
  PolicyWatch& operator=(const PolicyWatch&) = delete;

 private:
  PolicyWatch() = default;
  // (Re)places the watches on whatever the paths name now.
  Status AddWatches();
  // True if an event read from the inotify descriptor concerns the set.
  bool ReadEvents();
  void Run();

  std::string dir_, parent_, name_;
  std::function<void()> on_change_;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;             // eventfd: the destructor wakes the thread
  std::vector<int> watches_;     // [0] is the parent's
  std::thread thread_;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_POLICY_WATCH_H_
