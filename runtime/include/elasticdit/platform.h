// Process-level services: ExecuTorch's log lines, the XNNPACK thread pool size, peak memory, a clock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace elasticdit {

// Routes ExecuTorch's log (ET_LOG) through the runtime: kept in memory (the last lines explain a failed load)
// and echoed to stderr when `echo` is set. Call once, before anything is loaded.
void capture_executorch_log(bool echo);
std::string last_executorch_error();  // the newest error-level line, "" if none

// Resizes the shared thread pool (XNNPACK and the optimized kernels); 0 keeps the runtime's default (the
// performant cores). Must run before a method is loaded: a loaded delegate keeps the pool it was given.
void set_threads(int threads);
int thread_count();

// The process's peak resident set size in KiB (/proc/self/status VmHWM, else getrusage), -1 when unknown.
int64_t peak_rss_kib();

double now_ms();  // a monotonic clock

std::string cpu_arch();  // "x86_64", "aarch64", ... (compile-time)

}  // namespace elasticdit
