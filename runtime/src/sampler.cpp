#include "elasticdit/sampler.h"

#include <cmath>
#include <cstdlib>
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

std::vector<SchedulePhase> parse_schedule_spec(const std::string& spec) {
  auto bad = [&](const std::string& what) { return Error(ErrorKind::Usage, "schedule '" + spec + "': " + what); };
  auto trim = [](std::string t) {
    const size_t a = t.find_first_not_of(" \t"), b = t.find_last_not_of(" \t");
    return a == std::string::npos ? std::string() : t.substr(a, b - a + 1);
  };
  const std::string text = trim(spec);
  if (text.empty()) {
    throw Error(ErrorKind::Usage, "a schedule is empty: give POINT or POINT:SHARE,POINT:SHARE,...");
  }
  std::vector<std::string> parts;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    parts.push_back(trim(part));
  }
  if (text.back() == ',') {
    parts.push_back("");
  }
  if (parts.size() == 1 && parts[0].find(':') == std::string::npos) {
    return {SchedulePhase{parts[0], 1.0}};
  }
  std::vector<SchedulePhase> phases;
  double total = 0.0;
  for (const std::string& part : parts) {
    const size_t colon = part.find(':');
    const std::string point = colon == std::string::npos ? "" : trim(part.substr(0, colon));
    const std::string share = colon == std::string::npos ? "" : trim(part.substr(colon + 1));
    if (point.empty() || share.empty() || share.find(':') != std::string::npos) {
      throw bad("'" + part + "' is not POINT:SHARE (every phase of a schedule needs both)");
    }
    char* end = nullptr;
    const double value = std::strtod(share.c_str(), &end);
    if (*end != '\0') {
      throw bad("share '" + share + "' is not a number");
    }
    if (!std::isfinite(value) || value <= 0) {
      throw bad("share " + share + " must be a number above 0");
    }
    phases.push_back({point, value});
    total += value;
  }
  if (std::fabs(total - 1.0) > 1e-6) {
    throw bad("the shares sum to " + std::to_string(total) + ", not 1");
  }
  return phases;
}

Schedule Schedule::from_phases(const std::vector<SchedulePhase>& phases, int steps) {
  if (phases.empty() || steps < 1) {
    throw Error(ErrorKind::Usage, "a schedule needs a phase and at least one step");
  }
  std::vector<double> cumulative;
  double total = 0.0;
  for (const SchedulePhase& p : phases) {  // rounded to 9 decimals: a midpoint on a boundary compares as the
    total += p.share;                       // decimal shares say (0.1 + 0.2 is 0.3 here, as in schedules.py)
    cumulative.push_back(std::floor(total * 1e9 + 0.5) / 1e9);
  }
  cumulative.back() = 1.0;
  Schedule s;
  for (int i = 0; i < steps; ++i) {
    const double at = (i + 0.5) / steps;
    size_t k = 0;
    while (k + 1 < cumulative.size() && !(at < cumulative[k])) {
      ++k;
    }
    s.points.push_back(phases[k].point);
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
