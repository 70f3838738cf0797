#include "elasticdit/sampler.h"

#include <sstream>

#include "elasticdit/errors.h"

namespace elasticdit {

std::vector<float> shifted_sigmas(int steps, double shift) {
  std::vector<float> out(static_cast<size_t>(steps) + 1);
  for (int i = 0; i <= steps; ++i) {
    // torch.linspace(1, 0, steps + 1) in float64: start + i * step for the first half, end - (n-1-i) * step for
    // the second (ATen's linspace kernel fills from both ends).
    const double step = (0.0 - 1.0) / steps;
    const int halfway = (steps + 1) / 2;
    const double s = i < halfway ? 1.0 + step * i : 0.0 - step * (steps - i);
    out[static_cast<size_t>(i)] = static_cast<float>(shift * s / (1.0 + (shift - 1.0) * s));
  }
  return out;
}

void euler_step(std::vector<float>& x, const std::vector<float>& v, float sigma, float sigma_next) {
  const float dt = sigma_next - sigma;
  for (size_t i = 0; i < x.size(); ++i) {
    const float delta = dt * v[i];
    x[i] = x[i] + delta;
  }
}

void apply_guidance(std::vector<float>& uncond, const std::vector<float>& cond, float guidance) {
  for (size_t i = 0; i < uncond.size(); ++i) {
    const float diff = cond[i] - uncond[i];
    const float scaled = guidance * diff;
    uncond[i] = uncond[i] + scaled;
  }
}

Schedule Schedule::single(const std::string& point, int steps) {
  Schedule s;
  s.points.assign(static_cast<size_t>(steps), point);
  return s;
}

Schedule Schedule::per_step(const std::string& csv, int steps) {
  Schedule s;
  std::stringstream in(csv);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name.empty()) {
      throw Error(ErrorKind::Usage, "--per-step has an empty operating point name in '" + csv + "'");
    }
    s.points.push_back(name);
  }
  if (s.steps() != steps) {
    throw Error(ErrorKind::Usage, "--per-step names " + std::to_string(s.steps()) + " operating points for " +
                                      std::to_string(steps) + " steps (one per step)");
  }
  return s;
}

bool Schedule::uniform() const {
  for (const std::string& p : points) {
    if (p != points.front()) {
      return false;
    }
  }
  return true;
}

}  // namespace elasticdit
