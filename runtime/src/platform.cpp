#include "elasticdit/platform.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <mutex>

#include <executorch/runtime/platform/platform.h>

#if __has_include(<executorch/extension/threadpool/threadpool.h>) && __has_include(<pthreadpool.h>)
#include <executorch/extension/threadpool/threadpool.h>
#else
// The wheel ships libexecutorch_threadpool.so but not threadpool.h (it includes pthreadpool.h, which the wheel
// does not carry either). These are the two exported entry points of that library the runtime calls, declared
// as threadpool.h declares them; a source build of ExecuTorch (Android, iOS) uses the real header above.
namespace executorch::extension::threadpool {
class ThreadPool final {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool
#endif

namespace elasticdit {

namespace {

std::mutex log_mutex;
std::deque<std::string> log_lines;
std::string last_error;
bool log_echo = false;

void emit_log(et_timestamp_t, et_pal_log_level_t level, const char* filename, const char*, size_t line,
              const char* message, size_t length) {
  std::string text(message, length);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
    text.pop_back();
  }
  const char tag = static_cast<char>(level);
  std::lock_guard<std::mutex> lock(log_mutex);
  if (tag == 'E' || tag == 'F') {
    last_error = text;
  }
  log_lines.push_back(text);
  if (log_lines.size() > 64) {
    log_lines.pop_front();
  }
  if (log_echo) {
    std::fprintf(stderr, "%c executorch:%s:%zu] %s\n", tag, filename ? filename : "?", line, text.c_str());
  }
}

}  // namespace

void capture_executorch_log(bool echo) {
  log_echo = echo;
  executorch::runtime::register_pal(executorch::runtime::PalImpl::create(emit_log, __FILE__));
}

std::string last_executorch_error() {
  std::lock_guard<std::mutex> lock(log_mutex);
  return last_error;
}

void set_threads(int threads) {
  if (threads > 0) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(static_cast<uint32_t>(threads));
#pragma GCC diagnostic pop
  }
}

int thread_count() {
  return static_cast<int>(executorch::extension::threadpool::get_threadpool()->get_thread_count());
}

int64_t peak_rss_kib() {
  // VmHWM first: it belongs to this program's address space. getrusage's ru_maxrss is kept across execve on
  // Linux, so a process started from a large parent (a Python interpreter) would report the parent's peak.
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    long long kib = -1;
    while (std::fgets(line, sizeof(line), f)) {
      if (std::sscanf(line, "VmHWM: %lld kB", &kib) == 1) {
        break;
      }
    }
    std::fclose(f);
    if (kib >= 0) {
      return static_cast<int64_t>(kib);
    }
  }
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) {
    return -1;
  }
#ifdef __APPLE__
  return static_cast<int64_t>(usage.ru_maxrss) / 1024;  // bytes on Darwin
#else
  return static_cast<int64_t>(usage.ru_maxrss);  // KiB
#endif
}

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

std::string cpu_arch() {
#if defined(__aarch64__)
  return "aarch64";
#elif defined(__x86_64__)
  return "x86_64";
#elif defined(__arm__)
  return "arm";
#else
  return "unknown";
#endif
}

}  // namespace elasticdit
