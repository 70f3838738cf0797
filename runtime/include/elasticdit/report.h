// The timings document `elasticdit-run generate` writes (--timings FILE, --json): format
// "elasticdit-run-timings", version 1. Its fields are documented in docs/runtime.md.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "elasticdit/pipeline.h"

namespace elasticdit {

struct RunInfo {
  std::string bundle;
  std::string prompt;
  std::vector<std::string> schedule;
  float guidance = 1.0f;
  bool cfg_batch = false;
  int threads = 0;  // the pool size in use
  std::string load_mode;
  std::string noise;
  std::string output;
  int warmup = 0;
  int64_t height = 0, width = 0;
};

std::string timings_json(const RunInfo& info, const LoadTimings& first, const std::optional<LoadTimings>& warm,
                         const std::vector<RunTimings>& runs, double write_ms, int64_t peak_rss_kib);

// A JSON file holding a list of strings (Error(Io) otherwise).
std::vector<std::string> read_string_list(const std::string& path);

constexpr const char* kRuntimeVersion = "0.1.0";

}  // namespace elasticdit
