// elasticdit-run: the app-side pipeline from the command line (see docs/runtime.md).
//
//   elasticdit-run generate BUNDLE --prompt TEXT --noise NOISE.npy [-o OUT.png|OUT.ppm] [--op NAME |
//       --schedule NAME|SPEC | --per-step A,B,...] [--resolution HxW] [--steps N] [--cfg S] [--runs N] [--warmup N] [--threads N] [--load-mode mmap|file]
//       [--no-warm-load] [--timings FILE.json] [--json] [--dump DIR] [--verbose]
//   elasticdit-run methods BUNDLE --out DIR [--inputs DIR] [--threads N] [--load-mode mmap|file] [--verbose]
//   elasticdit-run schedule BUNDLE --schedule NAME|SPEC [--resolution HxW] [--steps N]
//   elasticdit-run tokenize (BUNDLE | --tokenizer BLOCK.json) (--prompt TEXT | --prompts FILE.json)
//   elasticdit-run --version
//
// Errors: one line `error: <Name>: <message>` on stderr and a non-zero exit code per kind (errors.h).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "elasticdit/errors.h"
#include "elasticdit/files.h"
#include "elasticdit/image.h"
#include "elasticdit/manifest.h"
#include "elasticdit/pipeline.h"
#include "elasticdit/platform.h"
#include "elasticdit/report.h"

using namespace elasticdit;

// A marker the Python side finds in the binary to tell elasticdit-run from ExecuTorch's executor_runner.
extern "C" const char kElasticditRunMarker[] = "ELASTICDIT_RUN_BINARY/1";

namespace {

const char* kUsage =
    "usage: elasticdit-run generate BUNDLE --prompt TEXT --noise NOISE.npy [-o OUT.png|OUT.ppm] [--op NAME | "
    "--schedule NAME|SPEC | --per-step A,B,...] [--resolution HxW] [--steps N] [--cfg S] [--runs N] [--warmup N] [--threads N] [--load-mode mmap|file] "
    "[--no-warm-load] [--timings FILE.json] [--json] [--dump DIR] [--verbose]\n"
    "       elasticdit-run methods BUNDLE --out DIR [--inputs DIR] [--threads N] [--load-mode mmap|file] [--verbose]\n"
    "       elasticdit-run schedule BUNDLE --schedule NAME|SPEC [--resolution HxW] [--steps N]\n"
    "       elasticdit-run tokenize (BUNDLE | --tokenizer BLOCK.json) (--prompt TEXT | --prompts FILE.json)\n"
    "       elasticdit-run --version\n";

struct Args {
  std::string command, bundle;
  std::map<std::string, std::string> values;
  std::set<std::string> flags;

  bool has(const std::string& k) const { return values.count(k) > 0; }
  std::string get(const std::string& k, const std::string& fallback = "") const {
    auto it = values.find(k);
    return it == values.end() ? fallback : it->second;
  }
  long integer(const std::string& k, long fallback) const {
    if (!has(k)) {
      return fallback;
    }
    char* end = nullptr;
    const std::string& v = values.at(k);
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0') {
      throw Error(ErrorKind::Usage, "--" + k + " takes an integer, got '" + v + "'");
    }
    return n;
  }
  double number(const std::string& k, double fallback) const {
    if (!has(k)) {
      return fallback;
    }
    char* end = nullptr;
    const std::string& v = values.at(k);
    const double n = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0') {
      throw Error(ErrorKind::Usage, "--" + k + " takes a number, got '" + v + "'");
    }
    return n;
  }
};

Args parse(int argc, char** argv, const std::set<std::string>& valued, const std::set<std::string>& flags) {
  Args a;
  a.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-o") {
      arg = "--output";
    }
    if (arg.rfind("--", 0) == 0) {
      std::string key = arg.substr(2);
      std::optional<std::string> inline_value;
      if (auto eq = key.find('='); eq != std::string::npos) {
        inline_value = key.substr(eq + 1);
        key = key.substr(0, eq);
      }
      if (flags.count(key)) {
        a.flags.insert(key);
      } else if (valued.count(key)) {
        if (inline_value) {
          a.values[key] = *inline_value;
        } else if (i + 1 < argc) {
          a.values[key] = argv[++i];
        } else {
          throw Error(ErrorKind::Usage, "--" + key + " needs a value");
        }
      } else {
        throw Error(ErrorKind::Usage, "unknown option --" + key + " for '" + a.command + "'");
      }
    } else if (a.bundle.empty()) {
      a.bundle = arg;
    } else {
      throw Error(ErrorKind::Usage, "unexpected argument '" + arg + "' (one BUNDLE folder)");
    }
  }
  if (a.bundle.empty() && !(a.command == "tokenize" && a.has("tokenizer"))) {
    throw Error(ErrorKind::Usage, "'" + a.command + "' needs a BUNDLE folder");
  }
  return a;
}

void setup(const Args& a) {
  capture_executorch_log(a.flags.count("verbose") > 0);
  const long threads = a.integer("threads", 0);
  if (threads < 0) {
    throw Error(ErrorKind::Usage, "--threads must be at least 1");
  }
  set_threads(static_cast<int>(threads));
}

// The manifest at --resolution HxW (default: the bundle's default resolution).
Manifest manifest_of(const Args& a) {
  Manifest manifest = read_manifest(a.bundle);
  if (a.has("resolution")) {
    return manifest.at_resolution(parse_resolution(a.get("resolution")));
  }
  return manifest;
}

int steps_of(const Args& a, const Manifest& manifest) {
  const long steps = a.integer("steps", manifest.steps);
  if (steps < 1) {
    throw Error(ErrorKind::Usage, "--steps must be positive, got " + std::to_string(steps));
  }
  return static_cast<int>(steps);
}

// The per-step points of --per-step, --schedule (a name in the manifest's "schedules", else a spec) or --op.
Schedule schedule_of(const Args& a, const Manifest& manifest) {
  if (a.has("per-step")) {
    const std::string csv = a.get("per-step");
    const long count = 1 + static_cast<long>(std::count(csv.begin(), csv.end(), ','));
    return Schedule::per_step(csv, static_cast<int>(a.integer("steps", count)));
  }
  if (a.has("schedule")) {
    return manifest.schedule(a.get("schedule"), steps_of(a, manifest));
  }
  return Schedule::single(a.get("op", manifest.default_point), steps_of(a, manifest));
}

// The operating point of every step, as JSON: what a schedule means for this bundle and step count.
int schedule(const Args& a) {
  if (!a.has("schedule")) {
    throw Error(ErrorKind::Usage, "schedule needs --schedule NAME|SPEC");
  }
  const Manifest manifest = manifest_of(a);
  const Schedule s = schedule_of(a, manifest);
  std::string points;
  for (const std::string& p : s.points) {
    points += (points.empty() ? "\"" : ", \"") + p + "\"";
  }
  std::printf("{\"schedule\": \"%s\", \"steps\": %d, \"points\": [%s]}\n", a.get("schedule").c_str(), s.steps(),
              points.c_str());
  return 0;
}

int generate(const Args& a) {
  setup(a);
  if (!a.has("prompt")) {
    throw Error(ErrorKind::Usage, "generate needs --prompt TEXT (\"\" for the empty prompt)");
  }
  if (!a.has("noise")) {
    throw Error(ErrorKind::Usage,
                "generate needs --noise FILE.npy, the initial latent (torch's seeded generator cannot be reproduced "
                "here: `elasticdit generate --runner native --seed S` writes the seed's noise and passes it)");
  }
  if (a.has("op") + a.has("per-step") + a.has("schedule") > 1) {
    throw Error(ErrorKind::Usage, "give one of --op, --schedule, --per-step");
  }
  const long runs = a.integer("runs", 1), warmup = a.integer("warmup", 0);
  if (runs < 1 || warmup < 0) {
    throw Error(ErrorKind::Usage, "--runs must be at least 1 and --warmup at least 0");
  }
  const LoadMode mode = parse_load_mode(a.get("load-mode", "mmap"));
  const std::string output = a.get("output");
  if (!output.empty() && !(output.size() > 4 && (output.substr(output.size() - 4) == ".png" ||
                                                 output.substr(output.size() - 4) == ".ppm"))) {
    throw Error(ErrorKind::Usage, "-o must name a .png or .ppm file, got " + output);
  }
  Manifest manifest = manifest_of(a);
  const Schedule schedule = schedule_of(a, manifest);
  const double guidance = a.number("cfg", manifest.guidance);
  if (guidance < 0) {
    throw Error(ErrorKind::Usage, "--cfg must be non-negative");
  }
  Tensor noise = read_npy(a.get("noise"));

  Pipeline pipeline(manifest, mode);
  const auto methods = pipeline.methods_for(schedule);
  const LoadTimings first = pipeline.load(methods);
  std::optional<LoadTimings> warm;
  if (!a.flags.count("no-warm-load")) {
    pipeline.unload();
    warm = pipeline.load(methods);
  }
  GenerateRequest request{a.get("prompt"), schedule, static_cast<float>(guidance), noise};
  std::vector<RunTimings> timed;
  GenerateResult result;
  for (long i = 0; i < warmup + runs; ++i) {
    result = pipeline.generate(request);
    if (i >= warmup) {
      timed.push_back(result.timings);
    }
  }
  const double w0 = now_ms();
  if (!output.empty()) {
    write_image(output, result.rgb, result.height, result.width);
  }
  const double write_ms = now_ms() - w0;
  if (a.has("dump")) {
    const std::string dir = a.get("dump");
    if (!is_dir(dir)) {
      throw Error(ErrorKind::Io, "--dump " + dir + " is not a folder");
    }
    write_npy(join_path(dir, "latent.npy"), result.latent);
    write_npy(join_path(dir, "image.npy"), result.image);
    for (const auto& [name, tensor] : result.encoded) {
      write_npy(join_path(dir, name + ".npy"), tensor);
    }
  }
  RunInfo info;
  info.bundle = a.bundle;
  info.prompt = request.prompt;
  info.schedule = schedule.points;
  info.guidance = request.guidance;
  info.cfg_batch = manifest.cfg_batch;
  info.threads = thread_count();
  info.load_mode = a.get("load-mode", "mmap");
  info.noise = a.get("noise");
  info.output = output;
  info.warmup = static_cast<int>(warmup);
  info.height = result.height;
  info.width = result.width;
  const std::string doc = timings_json(info, first, warm, timed, write_ms, peak_rss_kib());
  if (a.has("timings")) {
    write_file_atomic(a.get("timings"), doc);
  }
  if (a.flags.count("json")) {
    std::fputs(doc.c_str(), stdout);
  } else {
    std::vector<double> e2e;
    for (const RunTimings& r : timed) {
      e2e.push_back(r.e2e_ms);
    }
    std::sort(e2e.begin(), e2e.end());
    std::printf("%s%s: %s, %d steps, cfg %g, e2e %.1f ms (median of %zu), load %.1f ms first%s, peak RSS %.1f MB\n",
                output.empty() ? "ran" : "wrote ", output.c_str(),
                schedule.uniform() ? schedule.points.front().c_str() : "per-step schedule", schedule.steps(),
                guidance, e2e[e2e.size() / 2], e2e.size(), first.total_ms,
                warm ? (" / " + std::to_string(static_cast<int>(warm->total_ms)) + " ms warm").c_str() : "",
                peak_rss_kib() / 1024.0);
  }
  return 0;
}

// Deterministic inputs (the same on every CPU): splitmix64 bits -> floats built from 24-bit integers.
struct Inputs {
  uint64_t state;
  explicit Inputs(const std::string& seed) : state(1469598103934665603ull) {
    for (unsigned char c : seed) {
      state = (state ^ c) * 1099511628211ull;
    }
  }
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) / 16777216.0f; }
  // About N(0, 1): Irwin-Hall of four uniforms, centred and scaled (plain float arithmetic, no libm).
  float normal() {
    const float sum = uniform(0.0f, 1.0f) + uniform(0.0f, 1.0f) + uniform(0.0f, 1.0f) + uniform(0.0f, 1.0f);
    return (sum - 2.0f) * 1.7320508f;
  }
};

int methods(const Args& a) {
  setup(a);
  if (!a.has("out") || !is_dir(a.get("out"))) {
    throw Error(ErrorKind::Usage, "methods needs --out DIR, an existing folder");
  }
  const std::string out = a.get("out"), in_dir = a.get("inputs");
  Manifest manifest = read_manifest(a.bundle);
  Pipeline pipeline(manifest, parse_load_mode(a.get("load-mode", "mmap")));
  std::vector<const MethodEntry*> entries;
  if (manifest.text_encoder) {
    entries.push_back(&*manifest.text_encoder);
  }
  for (const PointEntry& p : manifest.all_points) {  // every resolution's
    entries.push_back(&p);
  }
  for (const MethodEntry& d : manifest.decoders) {
    entries.push_back(&d);
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (manifest.tokenizer) {
    tokenizer = make_tokenizer(*manifest.tokenizer, manifest.bundle_dir);
  }
  std::string index = "{\"methods\": [";
  for (size_t m = 0; m < entries.size(); ++m) {
    const MethodEntry& e = *entries[m];
    std::vector<Tensor> inputs;
    for (size_t k = 0; k < e.inputs.size(); ++k) {
      const TensorSpec& spec = e.inputs[k];
      const std::string given = join_path(in_dir, e.method + ".in" + std::to_string(k) + ".npy");
      if (!in_dir.empty() && is_file(given)) {
        inputs.push_back(read_npy(given));
        continue;
      }
      Inputs gen(e.method + "/" + spec.name);
      if (spec.dtype == DType::Int64) {
        if (!tokenizer) {
          throw Error(ErrorKind::Bundle, "method " + e.method + " takes int64 input '" + spec.name +
                                             "' but the bundle has no tokenizer to make it");
        }
        std::vector<int64_t> ids = tokenizer->encode("a red circle left of a blue square");
        ids.resize(static_cast<size_t>(numel(spec.shape)), 0);
        inputs.push_back(Tensor::ints(spec.shape, ids));
      } else {
        std::vector<float> data(static_cast<size_t>(numel(spec.shape)));
        const bool time = spec.name == "timestep";
        for (float& v : data) {
          v = time ? gen.uniform(0.0f, 1.0f) : gen.normal();
        }
        inputs.push_back(Tensor::floats(spec.shape, data));
      }
      write_npy(join_path(out, e.method + ".in" + std::to_string(k) + ".npy"), inputs.back());
    }
    pipeline.load({&e});
    std::vector<Tensor> outputs = pipeline.run(e, inputs);
    for (size_t k = 0; k < outputs.size(); ++k) {
      write_npy(join_path(out, e.method + ".out" + std::to_string(k) + ".npy"), outputs[k]);
    }
    index += std::string(m ? ", " : "") + "{\"method\": \"" + e.method + "\", \"inputs\": " +
             std::to_string(inputs.size()) + ", \"outputs\": " + std::to_string(outputs.size()) + "}";
  }
  index += "]}\n";
  write_file_atomic(join_path(out, "methods.json"), index);
  std::printf("ran %zu methods; wrote %s/methods.json\n", entries.size(), out.c_str());
  return 0;
}

// The ids encode_text gets: one JSON list for --prompt, a list of lists for --prompts (a JSON list of strings).
// The tokenizer is the bundle's, or --tokenizer: a JSON file holding a manifest's tokenizer block, whose files
// are named relative to that file's folder (to check a tokenizer without exporting a bundle).
int tokenize(const Args& a) {
  std::unique_ptr<Tokenizer> tokenizer;
  if (a.has("tokenizer")) {
    if (!a.bundle.empty()) {
      throw Error(ErrorKind::Usage, "tokenize takes a BUNDLE or --tokenizer BLOCK.json, not both");
    }
    const std::string path = a.get("tokenizer");
    const size_t slash = path.rfind('/');
    tokenizer = make_tokenizer(parse_tokenizer_spec(read_file(path)),
                               slash == std::string::npos ? "." : path.substr(0, slash));
  } else {
    Manifest manifest = read_manifest(a.bundle);
    if (!manifest.tokenizer) {
      throw Error(ErrorKind::Bundle, a.bundle + " has no text encoder, so no tokenizer");
    }
    tokenizer = make_tokenizer(*manifest.tokenizer, manifest.bundle_dir);
  }
  auto ids_json = [&](const std::string& prompt) {
    std::string out = "[";
    for (int64_t id : tokenizer->encode(prompt)) {
      out += (out.size() > 1 ? ", " : "") + std::to_string(id);
    }
    return out + "]";
  };
  if (a.has("prompt") == a.has("prompts")) {
    throw Error(ErrorKind::Usage, "tokenize needs one of --prompt TEXT or --prompts FILE.json");
  }
  if (a.has("prompt")) {
    std::printf("%s\n", ids_json(a.get("prompt")).c_str());
    return 0;
  }
  std::string out = "[";
  for (const std::string& prompt : read_string_list(a.get("prompts"))) {
    out += (out.size() > 1 ? ",\n " : "") + ids_json(prompt);
  }
  std::printf("%s]\n", out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
      std::fputs(kUsage, argc < 2 ? stderr : stdout);
      return argc < 2 ? exit_code(ErrorKind::Usage) : 0;
    }
    const std::string command = argv[1];
    if (command == "--version") {
      std::printf("elasticdit-run %s (%s)\n", kRuntimeVersion, kElasticditRunMarker);
      return 0;
    }
    const std::set<std::string> common{"threads", "load-mode"};
    if (command == "generate") {
      std::set<std::string> valued{"prompt", "noise", "output", "op", "per-step", "schedule", "steps", "cfg", "runs",
                                   "warmup", "timings", "dump", "resolution"};
      valued.insert(common.begin(), common.end());
      return generate(parse(argc, argv, valued, {"json", "no-warm-load", "verbose"}));
    }
    if (command == "methods") {
      std::set<std::string> valued{"out", "inputs"};
      valued.insert(common.begin(), common.end());
      return methods(parse(argc, argv, valued, {"verbose"}));
    }
    if (command == "schedule") {
      return schedule(parse(argc, argv, {"schedule", "steps", "resolution"}, {}));
    }
    if (command == "tokenize") {
      return tokenize(parse(argc, argv, {"prompt", "prompts", "tokenizer"}, {}));
    }
    throw Error(ErrorKind::Usage, "unknown command '" + command + "' (generate, methods, schedule, tokenize, --version)");
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s: %s\n", error_name(e.kind()), e.what());
    return exit_code(e.kind());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: RuntimeError: %s\n", e.what());
    return 1;
  }
}
