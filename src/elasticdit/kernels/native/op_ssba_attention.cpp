// ExecuTorch kernel `elasticdit::ssba_attention.out`, registered with the runtime's kernel registry when this
// library is loaded (a static initializer, like the executorch wheel's custom_ops). The schema is defined for
// torch.export in elasticdit/kernels/ops.py:
//   ssba_attention.out(Tensor q, Tensor k, Tensor v, int grid_h, int grid_w, int tile, int window, int shift,
//                      float scale, *, Tensor(a!) out) -> Tensor(a!)
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <algorithm>
#include <atomic>

#include "ssba_kernel.h"

namespace elasticdit {
namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

bool contiguous_3d(const Tensor& t) {
  return t.dim() == 3 && t.strides()[2] == 1 && t.strides()[1] == t.size(2) && t.strides()[0] == t.size(1) * t.size(2);
}

Tensor& ssba_attention_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                           int64_t grid_h, int64_t grid_w, int64_t tile, int64_t window, int64_t shift,
                           double scale, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, q.scalar_type() == ScalarType::Float && k.scalar_type() == ScalarType::Float &&
                               v.scalar_type() == ScalarType::Float && out.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "ssba_attention: q, k, v and out must be float32");
  ET_KERNEL_CHECK_MSG(ctx, contiguous_3d(q) && contiguous_3d(k) && contiguous_3d(v), InvalidArgument, out,
                      "ssba_attention: q, k and v must be contiguous [batch*heads, seq, dim]");
  for (int d = 0; d < 3; ++d) {
    ET_KERNEL_CHECK_MSG(ctx, k.size(d) == q.size(d) && v.size(d) == q.size(d), InvalidArgument, out,
                        "ssba_attention: q, k and v must have one shape");
  }
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out);
  const SSBAProblem p{q.size(0), q.size(1), q.size(2), grid_h, grid_w, tile, window, shift,
                      static_cast<float>(scale)};
  const char* problem = ssba_check(p);
  ET_KERNEL_CHECK_MSG(ctx, problem == nullptr, InvalidArgument, out, "ssba_attention: %s", problem);
  const float* qd = q.const_data_ptr<float>();
  const float* kd = k.const_data_ptr<float>();
  const float* vd = v.const_data_ptr<float>();
  float* od = out.mutable_data_ptr<float>();
  // one worker per pool thread, each taking items from a shared counter (largest first: the text queries)
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min(executorch::extension::get_thread_count(), ssba_work_items(p));
  const bool ok = executorch::extension::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) ssba_run_shared(p, qd, kd, vd, od, next);
  });
  ET_KERNEL_CHECK_MSG(ctx, ok, Internal, out, "ssba_attention: parallel_for failed");
  return out;
}

}  // namespace
}  // namespace elasticdit

EXECUTORCH_LIBRARY(elasticdit, "ssba_attention.out", elasticdit::ssba_attention_out);
