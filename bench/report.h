// The bench's output: a results file per report (JSON through the schema-
// driven conversion, schemas/bench.fbs) and an SVG line plot per curve.
#ifndef LIAISON_BENCH_REPORT_H_
#define LIAISON_BENCH_REPORT_H_

#include <string>
#include <utility>
#include <vector>

#include "liaison/status.h"
#include "liaison/wire.h"

namespace liaison::bench {

// Writes `report` as pretty JSON to `path` (replacing it).
Status WriteReportJson(const ReportT& report, const std::string& path);

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), x ascending
};

struct Plot {
  std::string title;
  std::string x_label;
  std::string y_label;
  bool log_x = false;  // for curves over orders of magnitude (10 .. 10,000 agencies)
  std::vector<Series> series;
  double y_limit = 0;  // a target drawn as a dashed line; 0 = none
  std::string y_limit_label;
};

// Writes `plot` as a self-contained SVG (no scripts, no fonts beyond
// sans-serif) to `path`.
Status WriteSvgPlot(const Plot& plot, const std::string& path);

}  // namespace liaison::bench

#endif  // LIAISON_BENCH_REPORT_H_
