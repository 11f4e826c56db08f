#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

namespace liaison::bench {
namespace {

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IoError("cannot write " + path);
  return Status::Ok();
}

std::string Escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  char buf[32];
  if (v != 0 && (std::fabs(v) >= 10000 || std::fabs(v) < 0.01)) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.4g", v);
  }
  return buf;
}

// 1-2-5 steps covering [0, max].
double NiceStep(double max, int ticks) {
  const double raw = max / ticks;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * magnitude) return m * magnitude;
  }
  return 10 * magnitude;
}

}  // namespace

Status WriteReportJson(const ReportT& report, const std::string& path) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(Report::Pack(fbb, &report));
  wire::JsonCodec codec(wire::JsonCodec::Root::kBenchReport);
  auto json = codec.ToJson({fbb.GetBufferPointer(), fbb.GetSize()}, /*pretty=*/true);
  if (!json.ok()) return json.status();
  return WriteFile(path, *json + "\n");
}

Status WriteSvgPlot(const Plot& plot, const std::string& path) {
  constexpr double kWidth = 640, kHeight = 400, kLeft = 80, kRight = 160, kTop = 40, kBottom = 60;
  const double w = kWidth - kLeft - kRight, h = kHeight - kTop - kBottom;
  double x_min = 1e300, x_max = -1e300, y_max = plot.y_limit;
  for (const auto& s : plot.series) {
    for (auto [x, y] : s.points) {
      x_min = std::min(x_min, x);
      x_max = std::max(x_max, x);
      y_max = std::max(y_max, y);
    }
  }
  if (x_min > x_max) return Status::InvalidArgument(plot.title + ": nothing to plot");
  if (y_max <= 0) y_max = 1;
  const double y_step = NiceStep(y_max, 5);
  y_max = std::ceil(y_max / y_step) * y_step;
  auto tx = [&](double x) {
    if (x_max == x_min) return kLeft + w / 2;
    if (plot.log_x) return kLeft + w * (std::log10(x) - std::log10(x_min)) / (std::log10(x_max) - std::log10(x_min));
    return kLeft + w * (x - x_min) / (x_max - x_min);
  };
  auto ty = [&](double y) { return kTop + h * (1 - y / y_max); };

  static const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  std::string svg;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                kWidth, kHeight);
  svg += buf;
  std::snprintf(buf, sizeof buf, "<text x=\"%g\" y=\"24\" font-size=\"15\">%s</text>\n", kLeft,
                Escape(plot.title).c_str());
  svg += buf;
  // Axes, grid and ticks.
  for (double y = 0; y <= y_max + y_step / 2; y += y_step) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                  "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                  kLeft, ty(y), kLeft + w, ty(y), kLeft - 6, ty(y) + 4, Number(y).c_str());
    svg += buf;
  }
  std::vector<double> x_ticks;
  for (const auto& s : plot.series) {
    for (auto [x, y] : s.points) x_ticks.push_back(x);
  }
  std::sort(x_ticks.begin(), x_ticks.end());
  x_ticks.erase(std::unique(x_ticks.begin(), x_ticks.end()), x_ticks.end());
  for (double x : x_ticks) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#333\"/>"
                  "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%s</text>\n",
                  tx(x), kTop + h, tx(x), kTop + h + 5, tx(x), kTop + h + 18, Number(x).c_str());
    svg += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<path d=\"M%g %g V%g H%g\" fill=\"none\" stroke=\"#333\"/>\n"
                "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n"
                "<text transform=\"translate(18 %g) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
                kLeft, kTop, kTop + h, kLeft + w, kLeft + w / 2, kHeight - 18,
                Escape(plot.x_label + (plot.log_x ? " (log scale)" : "")).c_str(), kTop + h / 2,
                Escape(plot.y_label).c_str());
  svg += buf;
  if (plot.y_limit > 0) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"6 4\"/>"
                  "<text x=\"%g\" y=\"%.1f\" fill=\"#555\">%s</text>\n",
                  kLeft, ty(plot.y_limit), kLeft + w, ty(plot.y_limit), kLeft + w + 8, ty(plot.y_limit) + 4,
                  Escape(plot.y_limit_label).c_str());
    svg += buf;
  }
  // Series and legend.
  for (size_t i = 0; i < plot.series.size(); ++i) {
    const auto& s = plot.series[i];
    const char* colour = kColours[i % (sizeof kColours / sizeof kColours[0])];
    std::string points;
    for (auto [x, y] : s.points) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", tx(x), ty(y));
      points += buf;
    }
    svg += std::string("<polyline fill=\"none\" stroke=\"") + colour + "\" stroke-width=\"2\" points=\"" +
           points + "\"/>\n";
    for (auto [x, y] : s.points) {
      std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>%s: %s</title></circle>\n",
                    tx(x), ty(y), colour, Number(x).c_str(), Number(y).c_str());
      svg += buf;
    }
    const double ly = kTop + 16 + 18 * static_cast<double>(i);
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"/>"
                  "<text x=\"%g\" y=\"%g\">%s</text>\n",
                  kLeft + w + 8, ly, kLeft + w + 28, ly, colour, kLeft + w + 32, ly + 4, Escape(s.name).c_str());
    svg += buf;
  }
  svg += "</svg>\n";
  return WriteFile(path, svg);
}

}  // namespace liaison::bench
