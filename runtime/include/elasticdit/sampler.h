// The sampler's arithmetic, in float32 exactly as the Python package's `model/sampler.py` does it (each torch op
// rounds to float32; this code is compiled with -ffp-contract=off so no multiply-add is fused), and the step
// schedule: which operating point runs at which step.
#pragma once

#include <string>
#include <vector>

namespace elasticdit {

// steps + 1 sigmas from 1 down to 0 warped by SD3's time shift s' = shift*s / (1 + (shift-1)*s), computed in
// double and rounded to float32 (torch.linspace(float64) then .float()).
std::vector<float> shifted_sigmas(int steps, double shift);

// x <- x + (sigma_next - sigma) * v
void euler_step(std::vector<float>& x, const std::vector<float>& v, float sigma, float sigma_next);

// Classifier-free guidance in place: uncond <- uncond + guidance * (cond - uncond).
void apply_guidance(std::vector<float>& uncond, const std::vector<float>& cond, float guidance);

// A phase of a step schedule: an operating point and the share of the steps it runs.
struct SchedulePhase {
  std::string point;
  double share = 1.0;
};

// `POINT` (one phase) or `POINT:SHARE,POINT:SHARE,...`, shares above 0 summing to 1 within 1e-6 (the Python
// package's schedules.parse_schedule); Error(Usage) naming what is wrong.
std::vector<SchedulePhase> parse_schedule_spec(const std::string& spec);

// One operating point name per denoising step. A single point is the degenerate schedule; a step schedule's
// phases become steps by the contract's rule (docs/design.md, "Step schedules").
struct Schedule {
  std::vector<std::string> points;

  static Schedule single(const std::string& point, int steps);
  // With cumulative shares C_1 < ... < C_m (summed left to right in double, each rounded to 9 decimals, the last
  // taken as exactly 1), step i of `steps` runs phase min{k : (i + 0.5) / steps < C_k}.
  static Schedule from_phases(const std::vector<SchedulePhase>& phases, int steps);
  // "r4_d3,r4_d3,r1_d6": exactly `steps` comma-separated names (Error(Usage) otherwise).
  static Schedule per_step(const std::string& csv, int steps);
  int steps() const { return static_cast<int>(points.size()); }
  bool uniform() const;
};

}  // namespace elasticdit
