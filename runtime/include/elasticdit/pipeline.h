// Prompt -> image through a bundle's methods, as an app runs it: tokenize, encode_text (prompt and, for
// classifier-free guidance, the empty prompt), the rectified-flow Euler sampler over a step schedule of
// denoise methods, decode, 8-bit RGB. Same arithmetic and call order as the Python package's
// `generation.BundleSource`, so the same bundle, prompt, noise and settings give the same image.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "elasticdit/manifest.h"
#include "elasticdit/program.h"
#include "elasticdit/sampler.h"
#include "elasticdit/tensor.h"
#include "elasticdit/tokenizer.h"

namespace elasticdit {

struct StepTiming {
  int step = 0;
  float sigma = 0.0f;
  std::string point;
  int calls = 0;  // denoise method executions in this step (2 for guidance without a CFG-batched method)
  double ms = 0.0;
};

struct RunTimings {
  double tokenize_ms = 0.0;
  std::vector<double> encode_text_ms;  // one per encode_text call (prompt, then the empty prompt)
  std::vector<StepTiming> steps;
  double denoise_ms = 0.0;
  double decode_ms = 0.0;
  double postprocess_ms = 0.0;  // float image -> 8-bit RGB
  double e2e_ms = 0.0;          // tokenize through postprocess (no load, no file writing)
};

struct LoadTimings {
  double total_ms = 0.0;
  double program_ms = 0.0;                                // every .pte's header and segments
  std::vector<std::pair<std::string, double>> methods_ms;  // per method, in load order
};

struct GenerateRequest {
  std::string prompt;
  Schedule schedule;
  float guidance = 1.0f;
  Tensor noise;  // the initial latent [1, C, h, w], float32
};

struct GenerateResult {
  Tensor latent;              // the final latent (scaled, as the sampler leaves it)
  Tensor image;               // decode's output [1, 3, H, W] in about [0, 1]
  std::vector<uint8_t> rgb;   // H x W x 3
  int64_t height = 0, width = 0;
  RunTimings timings;
  std::vector<std::pair<std::string, Tensor>> encoded;  // text/pooled of the prompt and the empty prompt
};

class Pipeline {
 public:
  Pipeline(Manifest manifest, LoadMode mode = LoadMode::Mmap);
  ~Pipeline();

  const Manifest& manifest() const { return manifest_; }

  // The methods a schedule needs: the text encoder, each distinct denoise method, the decoder.
  std::vector<const MethodEntry*> methods_for(const Schedule& schedule) const;
  // Opens every program the methods live in and loads them (checking each signature against the manifest).
  LoadTimings load(const std::vector<const MethodEntry*>& methods);
  void unload();  // releases the programs and methods (the next load is a "warm" one)

  GenerateResult generate(const GenerateRequest& request);
  std::vector<Tensor> run(const MethodEntry& entry, const std::vector<Tensor>& inputs);

 private:
  struct Encoded {
    Tensor text, pooled;
  };
  Program& program_for(const MethodEntry& entry);
  Encoded encode(const std::string& prompt, RunTimings& timings);
  std::vector<float> call_denoise(const PointEntry& entry, int64_t rows, const std::vector<float>& x,
                                  const std::vector<float>& sigma, const std::vector<float>& text,
                                  const std::vector<float>& pooled, int& calls);
  std::vector<float> velocity(const PointEntry& entry, const std::vector<float>& x, float sigma, const Encoded& cond,
                              const Encoded& uncond, float guidance, int& calls);

  Manifest manifest_;
  LoadMode mode_;
  std::map<std::string, std::unique_ptr<Program>> programs_;  // by file
  std::unique_ptr<Tokenizer> tokenizer_;
};

// [1, 3, H, W] float -> H x W x 3 uint8: clamp to [0, 1], * 255, round half to even (torch.round).
std::vector<uint8_t> to_uint8(const Tensor& image);

}  // namespace elasticdit
