// CUDA registration of the zslfast operators: the CudaKernels policy launches the kernels of
// kernels.cuh on the current stream; the algorithms (GEMMs through ATen/cuBLAS) are the shared
// templates of ../ops_impl.h. Compiled only on machines whose torch has CUDA (see setup.py).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../ops_impl.h"
#include "kernels.cuh"

int64_t zslfast_cuda_runtime_version() { return CUDART_VERSION; }

namespace zslfast {
namespace {

using cuda::kThreads;

int metric_code(Metric m) {
  switch (m) {
    case Metric::SqEuclidean: return cuda::kSqEuclidean;
    case Metric::Euclidean: return cuda::kEuclidean;
    case Metric::Cosine: return cuda::kCosine;
    default: return cuda::kDot;
  }
}

int clamp_code(ClampMode m) {
  switch (m) {
    case ClampMode::Atan: return cuda::kClampAtan;
    case ClampMode::AtanScaled: return cuda::kClampAtanScaled;
    case ClampMode::Tanh: return cuda::kClampTanh;
    default: return cuda::kClampNone;
  }
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// Row kernels use one block per row; grid.x allows 2^31−1 blocks.
dim3 row_grid(int64_t rows) { return dim3(static_cast<unsigned int>(rows)); }

struct CudaKernels {
  static at::Tensor row_sqnorm(const at::Tensor& x) {
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor out = at::empty({x.size(0)}, x.options());
    if (x.size(0) == 0) return out;
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "zslfast_row_sqnorm_cuda", [&] {
      cuda::row_sqnorm_kernel<scalar_t><<<row_grid(x.size(0)), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), x.size(0), x.size(1));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }

  static void pairwise_epilogue(at::Tensor& out, const at::Tensor& xr, const at::Tensor& yr, Metric metric) {
    const c10::cuda::CUDAGuard guard(out.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "zslfast_pairwise_epilogue_cuda", [&] {
      cuda::pairwise_epilogue_kernel<scalar_t><<<cuda::elementwise_blocks(out.numel()), kThreads, 0, stream>>>(
          out.data_ptr<scalar_t>(), xr.const_data_ptr<scalar_t>(), yr.const_data_ptr<scalar_t>(), out.size(0),
          out.size(1), metric_code(metric));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static at::Tensor pairwise_grad_epilogue(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& xr,
                                           const at::Tensor& yr, Metric metric) {
    const c10::cuda::CUDAGuard guard(grad.device());
    at::Tensor w = at::empty_like(grad);
    if (w.numel() == 0) return w;
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "zslfast_pairwise_grad_cuda", [&] {
      cuda::pairwise_grad_kernel<scalar_t><<<cuda::elementwise_blocks(w.numel()), kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), xr.const_data_ptr<scalar_t>(),
          yr.const_data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), w.size(0), w.size(1), metric_code(metric));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return w;
  }

  static void softmax_rows(at::Tensor& s, double scale, const at::Tensor& rs, const at::Tensor& cs,
                           const at::Tensor& cb, bool exclude_self) {
    const c10::cuda::CUDAGuard guard(s.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "zslfast_softmax_rows_cuda", [&] {
      cuda::softmax_rows_kernel<scalar_t><<<row_grid(s.size(0)), kThreads, 0, stream>>>(
          s.data_ptr<scalar_t>(), s.size(0), s.size(1), static_cast<scalar_t>(scale), ptr_or_null<scalar_t>(rs),
          ptr_or_null<scalar_t>(cs), ptr_or_null<scalar_t>(cb), exclude_self);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static at::Tensor softmax_rows_backward(const at::Tensor& grad, const at::Tensor& P, double scale,
                                          const at::Tensor& rs, const at::Tensor& cs) {
    const c10::cuda::CUDAGuard guard(P.device());
    at::Tensor w = at::empty_like(P);
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "zslfast_softmax_rows_backward_cuda", [&] {
      cuda::softmax_rows_backward_kernel<scalar_t><<<row_grid(P.size(0)), kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), P.const_data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), P.size(0),
          P.size(1), static_cast<scalar_t>(scale), ptr_or_null<scalar_t>(rs), ptr_or_null<scalar_t>(cs));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return w;
  }

  static void project_rows(at::Tensor& a, const at::Tensor& x, const at::Tensor& norm, double eps) {
    if (a.size(0) == 0) return;
    const c10::cuda::CUDAGuard guard(a.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "zslfast_project_rows_cuda", [&] {
      cuda::project_rows_kernel<scalar_t><<<row_grid(a.size(0)), kThreads, 0, stream>>>(
          a.data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), norm.const_data_ptr<scalar_t>(), a.size(0),
          a.size(1), static_cast<scalar_t>(eps));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void argmax_rows(at::Tensor& s, double scale, const at::Tensor& cs, const at::Tensor& cb,
                          at::Tensor& out) {
    const c10::cuda::CUDAGuard guard(s.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "zslfast_argmax_rows_cuda", [&] {
      cuda::argmax_rows_kernel<scalar_t><<<row_grid(s.size(0)), kThreads, 0, stream>>>(
          s.const_data_ptr<scalar_t>(), s.size(0), s.size(1), static_cast<scalar_t>(scale),
          ptr_or_null<scalar_t>(cs), ptr_or_null<scalar_t>(cb), out.data_ptr<int64_t>());
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static std::tuple<at::Tensor, at::Tensor> coupling_forward(const at::Tensor& x, const at::Tensor& s_raw,
                                                             const at::Tensor& t, double clamp, ClampMode mode,
                                                             bool reverse, const at::Tensor& scale) {
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor y = at::empty_like(x);
    at::Tensor logdet = at::zeros({x.size(0)}, x.options());
    if (x.numel() == 0) return {y, logdet};
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "zslfast_coupling_forward_cuda", [&] {
      cuda::coupling_forward_kernel<scalar_t><<<row_grid(x.size(0)), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), s_raw.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(),
          y.data_ptr<scalar_t>(), logdet.data_ptr<scalar_t>(), scale.defined() ? scale.data_ptr<scalar_t>() : nullptr,
          x.size(0), x.size(1), static_cast<scalar_t>(clamp), clamp_code(mode), reverse);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {y, logdet};
  }

  static std::tuple<at::Tensor, at::Tensor> coupling_backward(const at::Tensor& gy, const at::Tensor& glogdet,
                                                              const at::Tensor& x, const at::Tensor& s_raw,
                                                              const at::Tensor& t, const at::Tensor& scale,
                                                              double clamp, ClampMode mode, bool reverse) {
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor gx = at::empty_like(x), gs = at::empty_like(x);
    if (x.numel() == 0) return {gx, gs};
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "zslfast_coupling_backward_cuda", [&] {
      cuda::coupling_backward_kernel<scalar_t><<<cuda::elementwise_blocks(x.numel()), kThreads, 0, stream>>>(
          gy.const_data_ptr<scalar_t>(), glogdet.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          s_raw.const_data_ptr<scalar_t>(), reverse ? t.const_data_ptr<scalar_t>() : nullptr,
          scale.const_data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), gs.data_ptr<scalar_t>(), x.size(0), x.size(1),
          static_cast<scalar_t>(clamp), clamp_code(mode), reverse);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {gx, gs};
  }

  // The region reductions are a norm and batched GEMVs, at full speed in ATen/cuBLAS on a GPU.
  static at::Tensor region_inv_norm(const at::Tensor& f) { return inv_norm(at::linalg_vector_norm(f, 2, {1})); }

  static at::Tensor region_pool(const at::Tensor& f, const at::Tensor& w) {
    return at::bmm(f, w.unsqueeze(2)).squeeze(2);
  }

  static at::Tensor region_dot(const at::Tensor& f, const at::Tensor& v) {
    return at::bmm(v.unsqueeze(1), f).squeeze(1);
  }

  static void attention_softmax(at::Tensor& e, const at::Tensor& s, const at::Tensor& wbar) {
    const c10::cuda::CUDAGuard guard(e.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "zslfast_attention_softmax_cuda", [&] {
      cuda::attention_softmax_kernel<scalar_t><<<row_grid(e.size(0)), kThreads, 0, stream>>>(
          e.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(s), wbar.defined() ? wbar.data_ptr<scalar_t>() : nullptr,
          e.size(1), e.size(2));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static at::Tensor attention_softmax_backward(const at::Tensor& da, const at::Tensor& p, const at::Tensor& s,
                                               const at::Tensor& row_add) {
    const c10::cuda::CUDAGuard guard(p.device());
    at::Tensor out = at::empty_like(p);
    const int64_t rows = p.size(0) * p.size(1), per_block = kThreads / 32;
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "zslfast_attention_softmax_backward_cuda", [&] {
      cuda::attention_softmax_backward_kernel<scalar_t><<<row_grid((rows + per_block - 1) / per_block), kThreads, 0,
                                                          stream>>>(
          ptr_or_null<scalar_t>(da), p.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(s),
          ptr_or_null<scalar_t>(row_add), out.data_ptr<scalar_t>(), rows, p.size(1), p.size(2));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
};

}  // namespace
}  // namespace zslfast

TORCH_LIBRARY_IMPL(zslfast, CUDA, m) { ZSLFAST_REGISTER_IMPLS(m, zslfast::CudaKernels); }
