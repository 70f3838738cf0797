#include "elasticdit/report.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "elasticdit/errors.h"
#include "elasticdit/files.h"
#include "elasticdit/platform.h"

namespace elasticdit {

using ojson = nlohmann::ordered_json;

namespace {

double r3(double v) { return std::round(v * 1000.0) / 1000.0; }

ojson summary(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  double mean = 0.0;
  for (double x : v) {
    mean += x;
  }
  mean /= static_cast<double>(n);
  const double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return ojson{{"n", n}, {"min", r3(v.front())}, {"median", r3(median)}, {"mean", r3(mean)}, {"max", r3(v.back())}};
}

ojson load_doc(const LoadTimings& t) {
  ojson methods = ojson::object();
  for (const auto& [name, ms] : t.methods_ms) {
    methods[name] = r3(ms);
  }
  return ojson{{"total", r3(t.total_ms)}, {"program", r3(t.program_ms)}, {"methods", methods}};
}

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#else
  return "unknown";
#endif
}

}  // namespace

std::string timings_json(const RunInfo& info, const LoadTimings& first, const std::optional<LoadTimings>& warm,
                         const std::vector<RunTimings>& runs, double write_ms, int64_t peak_rss_kib) {
  ojson doc;
  doc["format"] = "elasticdit-run-timings";
  doc["version"] = 1;
  doc["runner"] = {{"name", "elasticdit-run"}, {"version", kRuntimeVersion}, {"arch", cpu_arch()},
                   {"compiler", compiler()}, {"threads", info.threads}, {"load_mode", info.load_mode}};
  doc["bundle"] = info.bundle;
  doc["prompt"] = info.prompt;
  const bool uniform = std::all_of(info.schedule.begin(), info.schedule.end(),
                                   [&](const std::string& p) { return p == info.schedule.front(); });
  doc["operating_point"] = uniform ? ojson(info.schedule.front()) : ojson(nullptr);
  doc["schedule"] = info.schedule;
  doc["steps"] = info.schedule.size();
  doc["guidance"] = info.guidance;
  doc["cfg_batch"] = info.cfg_batch;
  doc["noise"] = info.noise;
  doc["output"] = info.output.empty() ? ojson(nullptr) : ojson(info.output);
  doc["image"] = {{"height", info.height}, {"width", info.width}};
  doc["load_ms"] = {{"first", load_doc(first)}, {"warm", warm ? load_doc(*warm) : ojson(nullptr)}};
  doc["warmup"] = info.warmup;
  std::vector<double> e2e;
  ojson run_docs = ojson::array();
  for (const RunTimings& r : runs) {
    ojson steps = ojson::array();
    for (const StepTiming& s : r.steps) {
      steps.push_back({{"step", s.step}, {"sigma", s.sigma}, {"point", s.point}, {"calls", s.calls}, {"ms", r3(s.ms)}});
    }
    ojson encode = ojson::array();
    for (double ms : r.encode_text_ms) {
      encode.push_back(r3(ms));
    }
    run_docs.push_back({{"e2e_ms", r3(r.e2e_ms)},
                        {"tokenize_ms", r3(r.tokenize_ms)},
                        {"encode_text_ms", encode},
                        {"denoise_ms", r3(r.denoise_ms)},
                        {"decode_ms", r3(r.decode_ms)},
                        {"postprocess_ms", r3(r.postprocess_ms)},
                        {"steps", steps}});
    e2e.push_back(r.e2e_ms);
  }
  doc["runs"] = run_docs;
  doc["e2e_ms"] = e2e.empty() ? ojson(nullptr) : summary(e2e);
  doc["write_ms"] = r3(write_ms);
  doc["peak_rss_kib"] = peak_rss_kib >= 0 ? ojson(peak_rss_kib) : ojson(nullptr);
  doc["peak_rss_mb"] = peak_rss_kib >= 0 ? ojson(r3(peak_rss_kib / 1024.0)) : ojson(nullptr);
  return doc.dump(2) + "\n";
}

std::vector<std::string> read_string_list(const std::string& path) {
  try {
    const auto doc = nlohmann::json::parse(read_file(path));
    return doc.get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::Io, path + " is not a JSON list of strings: " + e.what());
  }
}

}  // namespace elasticdit
