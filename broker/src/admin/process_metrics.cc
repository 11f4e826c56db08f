#include "admin/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

namespace liaison::broker {
namespace {

prometheus::MetricFamily One(const char* name, const char* help, prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

// The fields of /proc/PID/stat after the command name, which is in
// parentheses and may itself hold spaces and parentheses: fields[0] is
// field 3 (state) of proc(5).
std::optional<std::vector<std::string>> StatFields(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(std::move(f));
  return fields;
}

std::optional<double> Number(const std::vector<std::string>& fields, size_t proc5_field) {
  const size_t i = proc5_field - 3;
  if (i >= fields.size()) return std::nullopt;
  try {
    return std::stod(fields[i]);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The boot time (seconds since the epoch) from /proc/stat's btime line.
std::optional<double> BootTime(const std::string& path) {
  std::ifstream in(path);
  for (std::string key; in >> key;) {
    if (key == "btime") {
      double t = 0;
      if (in >> t) return t;
      return std::nullopt;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return std::nullopt;
}

std::optional<double> OpenFds(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return std::nullopt;
  double n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the descriptor opendir itself holds while counting
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessMetrics::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  const long ticks = ::sysconf(_SC_CLK_TCK);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (auto stat = StatFields("/proc/self/stat"); stat && ticks > 0 && page > 0) {
    const auto utime = Number(*stat, 14), stime = Number(*stat, 15);
    if (utime && stime) {
      out.push_back(One("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                        MetricType::Counter, (*utime + *stime) / ticks));
    }
    if (auto vsize = Number(*stat, 23)) {
      out.push_back(One("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge, *vsize));
    }
    if (auto rss = Number(*stat, 24)) {
      out.push_back(
          One("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge, *rss * page));
    }
    const auto start_ticks = Number(*stat, 22);
    const auto boot = BootTime("/proc/stat");
    if (start_ticks && boot) {
      out.push_back(One("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                        MetricType::Gauge, *boot + *start_ticks / ticks));
    }
  }
  if (auto fds = OpenFds("/proc/self/fd")) {
    out.push_back(One("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, *fds));
  }
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    out.push_back(One("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
                      static_cast<double>(limit.rlim_cur)));
  }
  return out;
}

}  // namespace liaison::broker
