#include "policy_watch.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace liaison::broker {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kFileEvents = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM;
// How long the folder must stay quiet before a change counts.
constexpr int kSettleMs = 300;

// The files a policy set is made of (as the broker's fallback polling sees
// them): editors' swap and backup files do not cause reloads.
bool PartOfTheSet(std::string_view name) {
  for (std::string_view ext : {".yaml", ".sig", ".pub", ".rotation"}) {
    if (name.size() > ext.size() && name.substr(name.size() - ext.size()) == ext) return true;
  }
  return false;
}

}  // namespace

StatusOr<std::unique_ptr<PolicyWatch>> PolicyWatch::Start(const std::string& dir, std::function<void()> on_change) {
  std::unique_ptr<PolicyWatch> watch(new PolicyWatch());
  std::error_code ec;
  fs::path path = fs::absolute(dir, ec).lexically_normal();
  if (path.filename().empty()) path = path.parent_path();
  watch->dir_ = path.string();
  watch->parent_ = path.parent_path().string();
  watch->name_ = path.filename().string();
  watch->on_change_ = std::move(on_change);
  watch->inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (watch->inotify_fd_ < 0) return Status::Unavailable(std::string("inotify_init1: ") + std::strerror(errno));
  watch->stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (watch->stop_fd_ < 0) return Status::Unavailable(std::string("eventfd: ") + std::strerror(errno));
  LIAISON_RETURN_IF_ERROR(watch->AddWatches());
  watch->thread_ = std::thread([w = watch.get()] { w->Run(); });
  return watch;
}

PolicyWatch::~PolicyWatch() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    // On failure the thread cannot be woken; it only ever waits on these two.
    if (::write(stop_fd_, &one, sizeof one) == static_cast<ssize_t>(sizeof one)) {
      thread_.join();
    } else {
      thread_.detach();
    }
  }
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

Status PolicyWatch::AddWatches() {
  for (int wd : watches_) ::inotify_rm_watch(inotify_fd_, wd);  // gone with a replaced folder: harmless
  watches_.clear();
  const int parent = ::inotify_add_watch(inotify_fd_, parent_.c_str(), IN_MOVED_TO | IN_CREATE | IN_ONLYDIR);
  if (parent < 0) return Status::Unavailable("inotify on " + parent_ + ": " + std::strerror(errno));
  watches_.push_back(parent);
  for (const std::string& sub : {dir_, dir_ + "/agencies", dir_ + "/dpo-keys"}) {
    const int wd = ::inotify_add_watch(inotify_fd_, sub.c_str(), kFileEvents | IN_ONLYDIR);
    if (wd >= 0) {
      watches_.push_back(wd);
    } else if (sub == dir_) {
      return Status::Unavailable("inotify on " + sub + ": " + std::strerror(errno));
    }  // agencies/ or dpo-keys/ missing: the folder's own watch sees them made
  }
  return Status::Ok();
}

bool PolicyWatch::ReadEvents() {
  alignas(inotify_event) char buffer[16 * 1024];
  bool relevant = false;
  while (true) {
    const ssize_t n = ::read(inotify_fd_, buffer, sizeof buffer);
    if (n <= 0) break;  // EAGAIN: all read
    for (ssize_t at = 0; at < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buffer + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
      const std::string_view name = e->len > 0 ? std::string_view(e->name) : std::string_view();
      if (e->mask & IN_Q_OVERFLOW) {
        relevant = true;  // events were lost: look again
      } else if (!watches_.empty() && e->wd == watches_[0]) {
        relevant |= name == name_;  // the folder itself was replaced
      } else {
        relevant |= (e->mask & IN_ISDIR) != 0 || PartOfTheSet(name);
      }
    }
  }
  return relevant;
}

void PolicyWatch::Run() {
  bool changed = false;
  while (true) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int ready = ::poll(fds, 2, changed ? kSettleMs : -1);
    if (ready < 0 && errno != EINTR) {
      spdlog::error("event=policy_watch_failed error=\"{}\" action=reload_with_sighup", std::strerror(errno));
      return;
    }
    if (fds[1].revents & POLLIN) return;
    if (ready > 0 && (fds[0].revents & POLLIN)) {
      changed |= ReadEvents();
      continue;  // wait for quiet
    }
    if (ready == 0 && changed) {
      changed = false;
      // The folder may be a new one (replaced by a rename): watch that.
      if (Status st = AddWatches(); !st.ok()) {
        spdlog::error("event=policy_watch_failed error=\"{}\" action=reload_with_sighup", st.message());
      }
      spdlog::info("event=policy_files_changed");
      on_change_();
    }
  }
}

}  // namespace liaison::broker
