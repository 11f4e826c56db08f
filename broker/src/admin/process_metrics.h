// The process metrics every Prometheus client library exports
// (process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds), read from /proc/self at each scrape.
// prometheus-cpp 1.0 has no process collector, so this is one.
#ifndef LIAISON_BROKER_ADMIN_PROCESS_METRICS_H_
#define LIAISON_BROKER_ADMIN_PROCESS_METRICS_H_

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <vector>

namespace liaison::broker {

class ProcessMetrics : public prometheus::Collectable {
 public:
  // A metric whose source cannot be read is left out of the scrape (an
  // absent series, which Prometheus shows as such) rather than reported as 0.
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace liaison::broker

#endif  // LIAISON_BROKER_ADMIN_PROCESS_METRICS_H_
