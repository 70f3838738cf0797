#include "elasticdit/pipeline.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "elasticdit/errors.h"
#include "elasticdit/platform.h"

namespace elasticdit {

namespace {

std::vector<float> concat(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> out(a);
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

std::vector<int64_t> with_batch(std::vector<int64_t> shape, int64_t batch) {
  shape[0] = batch;
  return shape;
}

}  // namespace

Pipeline::Pipeline(Manifest manifest, LoadMode mode) : manifest_(std::move(manifest)), mode_(mode) {
  if (manifest_.text_encoder && manifest_.tokenizer) {
    tokenizer_ = make_tokenizer(*manifest_.tokenizer, manifest_.bundle_dir);
  }
}

Pipeline::~Pipeline() = default;

std::vector<const MethodEntry*> Pipeline::methods_for(const Schedule& schedule) const {
  std::vector<const MethodEntry*> out;
  if (manifest_.text_encoder) {
    out.push_back(&*manifest_.text_encoder);
  }
  std::set<std::string> seen;
  for (const std::string& name : schedule.points) {
    const PointEntry& p = manifest_.point(name);
    if (seen.insert(p.method).second) {
      out.push_back(&p);
    }
  }
  if (!manifest_.decoder) {
    throw Error(ErrorKind::Bundle, manifest_.bundle_dir + " has no decode method, so it cannot make images");
  }
  out.push_back(&*manifest_.decoder);
  return out;
}

LoadTimings Pipeline::load(const std::vector<const MethodEntry*>& methods) {
  LoadTimings t;
  const double start = now_ms();
  for (const MethodEntry* m : methods) {
    if (!programs_.count(m->file)) {
      const double t0 = now_ms();
      const std::string data = m->data_file.empty() ? "" : manifest_.path_of(m->data_file);
      auto program = std::make_unique<Program>(manifest_.path_of(m->file), data, mode_);
      program->load();
      t.program_ms += now_ms() - t0;
      programs_[m->file] = std::move(program);
    }
  }
  for (const MethodEntry* m : methods) {
    const double t0 = now_ms();
    programs_.at(m->file)->load_method(*m);
    t.methods_ms.emplace_back(m->method, now_ms() - t0);
  }
  t.total_ms = now_ms() - start;
  return t;
}

void Pipeline::unload() { programs_.clear(); }

Program& Pipeline::program_for(const MethodEntry& entry) {
  auto it = programs_.find(entry.file);
  if (it == programs_.end()) {
    load({&entry});
    it = programs_.find(entry.file);
  }
  return *it->second;
}

std::vector<Tensor> Pipeline::run(const MethodEntry& entry, const std::vector<Tensor>& inputs) {
  if (inputs.size() != entry.inputs.size()) {
    throw Error(ErrorKind::Shape, "method " + entry.method + " takes " + std::to_string(entry.inputs.size()) +
                                      " inputs, got " + std::to_string(inputs.size()));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].shape != entry.inputs[i].shape || inputs[i].dtype != entry.inputs[i].dtype) {
      throw Error(ErrorKind::Shape, "method " + entry.method + " input '" + entry.inputs[i].name + "' must be " +
                                        dtype_name(entry.inputs[i].dtype) + " " + shape_string(entry.inputs[i].shape) +
                                        ", got " + dtype_name(inputs[i].dtype) + " " + shape_string(inputs[i].shape));
    }
  }
  return program_for(entry).run(entry.method, inputs);
}

Pipeline::Encoded Pipeline::encode(const std::string& prompt, RunTimings& timings) {
  if (!manifest_.text_encoder) {
    if (!prompt.empty()) {
      throw Error(ErrorKind::Usage, manifest_.bundle_dir + " has no text encoder; only the empty prompt can be used");
    }
    const PointEntry& p = manifest_.points.front();
    const TensorSpec& text = p.input("text");
    const TensorSpec& pooled = p.input("pooled");
    Encoded e;
    e.text = Tensor::floats(with_batch(text.shape, 1), std::vector<float>(numel(with_batch(text.shape, 1)), 0.0f));
    e.pooled =
        Tensor::floats(with_batch(pooled.shape, 1), std::vector<float>(numel(with_batch(pooled.shape, 1)), 0.0f));
    return e;
  }
  const double t0 = now_ms();
  std::vector<int64_t> ids = tokenizer_->encode(prompt);
  timings.tokenize_ms += now_ms() - t0;
  const MethodEntry& te = *manifest_.text_encoder;
  const TensorSpec& spec = te.inputs.at(0);
  if (static_cast<int64_t>(ids.size()) != numel(spec.shape)) {
    throw Error(ErrorKind::Shape, "the tokenizer gives " + std::to_string(ids.size()) + " ids, " + te.method +
                                      " takes " + shape_string(spec.shape));
  }
  const double t1 = now_ms();
  std::vector<Tensor> out = run(te, {Tensor::ints(spec.shape, ids)});
  timings.encode_text_ms.push_back(now_ms() - t1);
  if (out.size() < 2) {
    throw Error(ErrorKind::Runtime, te.method + " returned " + std::to_string(out.size()) + " outputs (text, pooled)");
  }
  return {out[0], out[1]};
}

// One denoise request of `rows` rows (1, or 2 for a guidance batch), fitted to the method's batch exactly as
// BundleSource._denoise does: a batch-2 method asked for one row runs it twice over and keeps the first; a
// batch-1 method asked for two rows runs each row on its own.
std::vector<float> Pipeline::call_denoise(const PointEntry& entry, int64_t rows, const std::vector<float>& x,
                                          const std::vector<float>& sigma, const std::vector<float>& text,
                                          const std::vector<float>& pooled, int& calls) {
  const TensorSpec& lat = entry.input("latent");
  const TensorSpec& ts = entry.input("timestep");
  const TensorSpec& tx = entry.input("text");
  const TensorSpec& pl = entry.input("pooled");
  const int64_t batch = lat.shape[0];
  auto run_rows = [&](const std::vector<float>& xs, const std::vector<float>& ss, const std::vector<float>& txs,
                      const std::vector<float>& pls) {
    std::vector<Tensor> inputs;
    for (const TensorSpec& spec : entry.inputs) {
      const std::vector<float>& data =
          spec.name == "latent" ? xs : spec.name == "timestep" ? ss : spec.name == "text" ? txs : pls;
      if (spec.name != "latent" && spec.name != "timestep" && spec.name != "text" && spec.name != "pooled") {
        throw Error(ErrorKind::Bundle, "method " + entry.method + " has an input '" + spec.name +
                                           "' the sampler does not know (latent, timestep, text, pooled)");
      }
      inputs.push_back(Tensor::floats(spec.shape, data));
    }
    ++calls;
    return run(entry, inputs).at(0).f32;
  };
  if (rows == batch) {
    return run_rows(x, sigma, text, pooled);
  }
  if (rows == 1 && batch == 2) {
    std::vector<float> v = run_rows(concat(x, x), concat(sigma, sigma), concat(text, text), concat(pooled, pooled));
    v.resize(v.size() / 2);
    return v;
  }
  if (rows == 2 && batch == 1) {
    const size_t nx = x.size() / 2, nt = text.size() / 2, np = pooled.size() / 2;
    auto half = [](const std::vector<float>& v, size_t n, int i) {
      return std::vector<float>(v.begin() + i * n, v.begin() + (i + 1) * n);
    };
    std::vector<float> a = run_rows(half(x, nx, 0), half(sigma, 1, 0), half(text, nt, 0), half(pooled, np, 0));
    std::vector<float> b = run_rows(half(x, nx, 1), half(sigma, 1, 1), half(text, nt, 1), half(pooled, np, 1));
    return concat(a, b);
  }
  (void)ts, (void)tx, (void)pl;
  throw Error(ErrorKind::Shape, "method " + entry.method + " takes batch " + std::to_string(batch) + ", asked for " +
                                    std::to_string(rows));
}

std::vector<float> Pipeline::velocity(const PointEntry& entry, const std::vector<float>& x, float sigma,
                                      const Encoded& cond, const Encoded& uncond, float guidance, int& calls) {
  const std::vector<float> s1{sigma};
  if (guidance == 1.0f) {
    return call_denoise(entry, 1, x, s1, cond.text.f32, cond.pooled.f32, calls);
  }
  if (manifest_.cfg_batch) {  // one batch of 2: rows (uncond, cond)
    std::vector<float> both = call_denoise(entry, 2, concat(x, x), {sigma, sigma}, concat(uncond.text.f32, cond.text.f32),
                                           concat(uncond.pooled.f32, cond.pooled.f32), calls);
    std::vector<float> v(both.begin(), both.begin() + static_cast<long>(both.size() / 2));
    const std::vector<float> v_cond(both.begin() + static_cast<long>(both.size() / 2), both.end());
    apply_guidance(v, v_cond, guidance);
    return v;
  }
  std::vector<float> v = call_denoise(entry, 1, x, s1, uncond.text.f32, uncond.pooled.f32, calls);
  const std::vector<float> v_cond = call_denoise(entry, 1, x, s1, cond.text.f32, cond.pooled.f32, calls);
  apply_guidance(v, v_cond, guidance);
  return v;
}

GenerateResult Pipeline::generate(const GenerateRequest& req) {
  if (req.schedule.steps() < 1) {
    throw Error(ErrorKind::Usage, "--steps must be positive, got " + std::to_string(req.schedule.steps()));
  }
  if (req.guidance < 0.0f) {
    throw Error(ErrorKind::Usage, "--cfg must be non-negative");
  }
  const PointEntry& first = manifest_.point(req.schedule.points.front());
  const std::vector<int64_t> latent_shape = with_batch(first.input("latent").shape, 1);
  if (req.noise.dtype != DType::Float32 || req.noise.shape != latent_shape) {
    throw Error(ErrorKind::Shape, std::string("the noise must be float32 ") + shape_string(latent_shape) +
                                      " (the bundle's latent), got " + dtype_name(req.noise.dtype) + " " +
                                      shape_string(req.noise.shape));
  }
  for (const std::string& name : req.schedule.points) {
    if (with_batch(manifest_.point(name).input("latent").shape, 1) != latent_shape) {
      throw Error(ErrorKind::Shape, "operating point " + name + " takes latent " +
                                        shape_string(manifest_.point(name).input("latent").shape) + ", " +
                                        first.name + " takes " + shape_string(first.input("latent").shape));
    }
  }
  GenerateResult result;
  RunTimings& t = result.timings;
  const double start = now_ms();
  const Encoded cond = encode(req.prompt, t);
  const Encoded uncond = req.guidance != 1.0f ? encode("", t) : cond;
  result.encoded = {{"text", cond.text}, {"pooled", cond.pooled}};
  if (req.guidance != 1.0f) {
    result.encoded.emplace_back("uncond_text", uncond.text);
    result.encoded.emplace_back("uncond_pooled", uncond.pooled);
  }
  const std::vector<float> sigmas = shifted_sigmas(req.schedule.steps(), manifest_.shift);
  std::vector<float> x = req.noise.f32;
  const double denoise_start = now_ms();
  for (int i = 0; i < req.schedule.steps(); ++i) {
    const double t0 = now_ms();
    const PointEntry& entry = manifest_.point(req.schedule.points[static_cast<size_t>(i)]);
    int calls = 0;
    const std::vector<float> v = velocity(entry, x, sigmas[i], cond, uncond, req.guidance, calls);
    euler_step(x, v, sigmas[i], sigmas[i + 1]);
    t.steps.push_back({i, sigmas[i], entry.name, calls, now_ms() - t0});
  }
  t.denoise_ms = now_ms() - denoise_start;
  result.latent = Tensor::floats(latent_shape, x);
  const float scale = static_cast<float>(manifest_.scaling_factor);
  const float shift = static_cast<float>(manifest_.shift_factor);
  std::vector<float> unscaled(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    unscaled[i] = x[i] / scale + shift;
  }
  const MethodEntry& dec = *manifest_.decoder;
  const double d0 = now_ms();
  std::vector<Tensor> image = run(dec, {Tensor::floats(dec.inputs.at(0).shape, unscaled)});
  t.decode_ms = now_ms() - d0;
  result.image = image.at(0);
  const double p0 = now_ms();
  result.rgb = to_uint8(result.image);
  t.postprocess_ms = now_ms() - p0;
  result.height = result.image.shape.at(2);
  result.width = result.image.shape.at(3);
  t.e2e_ms = now_ms() - start;
  return result;
}

std::vector<uint8_t> to_uint8(const Tensor& image) {
  if (image.shape.size() != 4 || image.shape[0] != 1 || image.shape[1] != 3) {
    throw Error(ErrorKind::Shape, "decode returned " + shape_string(image.shape) + ", expected [1, 3, H, W]");
  }
  const int64_t h = image.shape[2], w = image.shape[3];
  std::vector<uint8_t> rgb(static_cast<size_t>(h * w * 3));
  for (int64_t c = 0; c < 3; ++c) {
    for (int64_t i = 0; i < h * w; ++i) {
      const float raw = image.f32[static_cast<size_t>(c * h * w + i)];
      const float v = std::isnan(raw) ? 0.0f : std::min(std::max(raw, 0.0f), 1.0f);
      const float scaled = v * 255.0f;
      rgb[static_cast<size_t>(i * 3 + c)] = static_cast<uint8_t>(std::nearbyint(scaled));
    }
  }
  return rgb;
}

}  // namespace elasticdit
