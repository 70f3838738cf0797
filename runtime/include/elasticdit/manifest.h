// A bundle's manifest.json (format "elasticdit-bundle", version 1): everything the app side needs to run it.
// The schema is documented in the repository's docs (docs/android.md, docs/runtime.md); this reader checks the
// parts the runtime uses and names what is wrong (Error(Bundle)).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "elasticdit/sampler.h"
#include "elasticdit/tensor.h"

namespace elasticdit {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::Float32;
};

struct MethodEntry {
  std::string method;
  std::string file;
  std::string data_file;  // the program's external weights (.ptd, `export --weights external`); empty: inline
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  int64_t height = 0, width = 0;  // the image resolution of a denoise or decode method (entry's "resolution")

  const TensorSpec& input(const std::string& name) const;  // throws Error(Bundle)
};

struct PointEntry : MethodEntry {
  std::string name;
  int compression_ratio = 0;
  std::string depth;
  double gflops = 0.0;
};

// The tokenizer block of the text encoder entry. `kind` selects the implementation (tokenizer.h); `json` keeps
// the whole block for kinds whose settings this struct does not spell out (e.g. files shipped in the bundle).
struct TokenizerSpec {
  std::string kind;
  int64_t length = 0;
  std::vector<std::string> vocab;  // kind "words"
  std::string json;
};

struct FileEntry {
  std::string path;
  int64_t bytes = 0;
};

struct Resolution {
  int64_t height = 0, width = 0;
  bool operator==(const Resolution& o) const { return height == o.height && width == o.width; }
  std::string text() const { return std::to_string(height) + "x" + std::to_string(width); }
};

// A manifest is read at one resolution (`height` x `width`: the bundle's default, or `at_resolution`'s):
// `points` and `decoder` are that resolution's methods; `all_points` and `decoders` hold every resolution's.
struct Manifest {
  std::string bundle_dir;
  std::string target;
  int64_t height = 0, width = 0;
  std::vector<Resolution> resolutions;  // every resolution the bundle has methods for, the default first
  int steps = 0;
  double shift = 1.0;
  double guidance = 1.0;
  double scaling_factor = 1.0;  // latent
  double shift_factor = 0.0;    // latent
  bool cfg_batch = false;
  std::string default_point;
  std::vector<PointEntry> points;       // at height x width
  std::optional<MethodEntry> decoder;   // at height x width
  std::vector<PointEntry> all_points;   // every denoise method, manifest order
  std::vector<MethodEntry> decoders;    // every decode method, the default resolution's first
  std::optional<MethodEntry> text_encoder;
  std::optional<TokenizerSpec> tokenizer;
  std::map<std::string, std::vector<SchedulePhase>> schedules;  // named step schedules ("schedules", optional)
  std::vector<FileEntry> files;

  const PointEntry& point(const std::string& name) const;  // throws Error(Usage) naming the valid points
  std::string path_of(const std::string& file) const;      // bundle_dir/file
  // The manifest at another of the bundle's resolutions; Error(Usage) naming the bundle's resolutions otherwise.
  Manifest at_resolution(const Resolution& r) const;
  // --schedule's value: a name in `schedules`, else a spec (POINT or POINT:SHARE,...), as per-step points.
  Schedule schedule(const std::string& name_or_spec, int steps) const;
};

// Reads and checks `bundle_dir/manifest.json`: format, version, target (android), required keys, and that every
// listed file exists with the listed size (a truncated or missing program is a named error here, not a crash).
// The result is at the bundle's default resolution (its top-level "resolution").
Manifest read_manifest(const std::string& bundle_dir);
// "HxW" (e.g. "64x96") -> a resolution; Error(Usage) when it is not two positive integers.
Resolution parse_resolution(const std::string& text);

}  // namespace elasticdit
