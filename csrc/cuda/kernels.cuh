// CUDA epilogue kernels of the zslfast operators.
//
// This header needs only the CUDA runtime (no torch headers), so every kernel can be compiled with
// plain `nvcc -c` on machines whose torch is CPU-only (tools/check_cuda.sh). The torch-facing glue
// that launches them lives in ops_cuda.cu. Semantics match the CPU kernels one for one (see the
// interface comment in ../ops_impl.h). Reductions accumulate in the element type (float or double).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace zslfast {
namespace cuda {

constexpr int kThreads = 256;  // threads per block for the row kernels (a multiple of 32)

enum MetricCode : int { kSqEuclidean = 0, kEuclidean = 1, kCosine = 2, kDot = 3 };
enum ClampCode : int { kClampAtan = 0, kClampAtanScaled = 1, kClampTanh = 2, kClampNone = 3 };

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// Sum / max over a block; every thread receives the result. `shared` holds kThreads/32 values.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int off = 16; off > 0; off >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, off));
  return v;
}

template <typename T, bool IsMax>
__device__ T block_reduce(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = IsMax ? warp_max(v) : warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < nwarps ? shared[lane] : (IsMax ? neg_inf<T>() : T(0));
    w = IsMax ? warp_max(w) : warp_sum(w);
    if (lane == 0) shared[0] = w;
  }
  __syncthreads();
  T r = shared[0];
  __syncthreads();  // shared may be reused by the caller's next reduction
  return r;
}

// |x_i|², one block per row.
template <typename T>
__global__ void row_sqnorm_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n, int64_t d) {
  __shared__ T shared[kThreads / 32];
  const T* r = x + (int64_t)blockIdx.x * d;
  T acc = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) acc += r[j] * r[j];
  acc = block_reduce<T, false>(acc, shared);
  if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

// ------------------------------------------------------------------------------------------
// Pairwise distances (element-wise over the GEMM result out = x·yᵀ)
// ------------------------------------------------------------------------------------------
template <typename T>
__global__ void pairwise_epilogue_kernel(T* __restrict__ out, const T* __restrict__ xr, const T* __restrict__ yr,
                                         int64_t n, int64_t m, int metric) {
  const int64_t total = n * m;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / m, j = e - i * m;
    const T o = out[e];
    T v;
    if (metric == kCosine) {
      v = T(1) - o * xr[i] * yr[j];
    } else {
      v = fmax(xr[i] + yr[j] - T(2) * o, T(0));
      if (metric == kEuclidean) v = sqrt(v);
    }
    out[e] = v;
  }
}

template <typename T>
__global__ void pairwise_grad_kernel(const T* __restrict__ grad, const T* __restrict__ out, const T* __restrict__ xr,
                                     const T* __restrict__ yr, T* __restrict__ w, int64_t n, int64_t m, int metric) {
  const int64_t total = n * m;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / m, j = e - i * m;
    const T g = grad[e];
    if (metric == kCosine) {
      w[e] = -g * xr[i] * yr[j];
    } else {
      const T d = out[e];
      w[e] = d > T(0) ? g / (T(2) * d) : T(0);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Row softmax of v_ij = scale·S_ij·rs_i·cs_j + cb_j (optional diagonal mask), one block per row
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T sim_value(T s, T a, const T* cs, const T* cb, int64_t j) {
  T v = s * a;
  if (cs) v *= cs[j];
  if (cb) v += cb[j];
  return v;
}

template <typename T>
__global__ void softmax_rows_kernel(T* __restrict__ s, int64_t n, int64_t m, T scale, const T* __restrict__ rs,
                                    const T* __restrict__ cs, const T* __restrict__ cb, bool exclude_self) {
  __shared__ T shared[kThreads / 32];
  const int64_t i = blockIdx.x;
  T* r = s + i * m;
  const T a = rs ? scale * rs[i] : scale;
  T vmax = neg_inf<T>();
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    const T v = (exclude_self && j == i) ? neg_inf<T>() : sim_value(r[j], a, cs, cb, j);
    r[j] = v;
    vmax = fmax(vmax, v);
  }
  vmax = block_reduce<T, true>(vmax, shared);
  T sum = 0;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    const T e = exp(r[j] - vmax);
    r[j] = e;
    sum += e;
  }
  const T inv = T(1) / block_reduce<T, false>(sum, shared);
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) r[j] *= inv;
}

template <typename T>
__global__ void softmax_rows_backward_kernel(const T* __restrict__ grad, const T* __restrict__ p, T* __restrict__ w,
                                             int64_t n, int64_t m, T scale, const T* __restrict__ rs,
                                             const T* __restrict__ cs) {
  __shared__ T shared[kThreads / 32];
  const int64_t off = (int64_t)blockIdx.x * m;
  T acc = 0;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) acc += grad[off + j] * p[off + j];
  const T c = block_reduce<T, false>(acc, shared);
  const T a = rs ? scale * rs[blockIdx.x] : scale;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    T v = p[off + j] * (grad[off + j] - c) * a;
    if (cs) v *= cs[j];
    w[off + j] = v;
  }
}

// A_i −= x_i (x_i·A_i)/|x_i|² for rows with |x_i| ≥ eps (the Jacobian of row normalisation).
template <typename T>
__global__ void project_rows_kernel(T* __restrict__ a, const T* __restrict__ x, const T* __restrict__ norm,
                                    int64_t n, int64_t d, T eps) {
  __shared__ T shared[kThreads / 32];
  const int64_t i = blockIdx.x;
  const T nrm = norm[i];
  if (nrm < eps) return;  // uniform across the block: no thread reaches the barrier below
  T* r = a + i * d;
  const T* xr = x + i * d;
  T acc = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) acc += r[j] * xr[j];
  const T coef = block_reduce<T, false>(acc, shared) / (nrm * nrm);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) r[j] -= xr[j] * coef;
}

// out_i = first argmax_j of scale·S_ij·cs_j + cb_j.
template <typename T>
__global__ void argmax_rows_kernel(const T* __restrict__ s, int64_t n, int64_t m, T scale, const T* __restrict__ cs,
                                   const T* __restrict__ cb, int64_t* __restrict__ out) {
  __shared__ T sv[kThreads];
  __shared__ int64_t si[kThreads];
  const int64_t i = blockIdx.x;
  const T* r = s + i * m;
  T best = neg_inf<T>();
  int64_t arg = m;  // sentinel: larger than any real index
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    const T v = sim_value(r[j], scale, cs, cb, j);
    if (v > best) best = v, arg = j;  // j increases per thread, so the first maximiser is kept
  }
  sv[threadIdx.x] = best;
  si[threadIdx.x] = arg;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const T ov = sv[threadIdx.x + stride];
      const int64_t oi = si[threadIdx.x + stride];
      if (ov > sv[threadIdx.x] || (ov == sv[threadIdx.x] && oi < si[threadIdx.x])) {
        sv[threadIdx.x] = ov;
        si[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[i] = si[0] < m ? si[0] : 0;
}

// ------------------------------------------------------------------------------------------
// Affine coupling
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T freia_atan_const() {
  return T(0.636);  // FrEIA's stand-in for 2/π in its atan clamp, kept for parity
}

// s = clamp_fn(u).
template <typename T>
__device__ __forceinline__ T clamp_fn(T u, int mode, T clamp) {
  if (mode == kClampAtan) return clamp * freia_atan_const<T>() * atan(u);
  if (mode == kClampAtanScaled) return clamp * freia_atan_const<T>() * atan(u / clamp);
  if (mode == kClampTanh) return clamp * tanh(u / clamp);
  return u;
}

// ds/du (rational for the atan modes).
template <typename T>
__device__ __forceinline__ T clamp_deriv(T u, int mode, T clamp) {
  if (mode == kClampAtan) return clamp * freia_atan_const<T>() / (T(1) + u * u);
  if (mode == kClampAtanScaled) {
    const T v = u / clamp;
    return freia_atan_const<T>() / (T(1) + v * v);
  }
  if (mode == kClampTanh) {
    const T th = tanh(u / clamp);
    return T(1) - th * th;
  }
  return T(1);
}

// One block per row: y element-wise, logdet = ±Σ s reduced in the block; e = exp(±s) written to
// `scale` when it is not null (saved for the backward).
template <typename T>
__global__ void coupling_forward_kernel(const T* __restrict__ x, const T* __restrict__ s_raw, const T* __restrict__ t,
                                        T* __restrict__ y, T* __restrict__ logdet, T* __restrict__ scale, int64_t b,
                                        int64_t l, T clamp, int mode, bool reverse) {
  __shared__ T shared[kThreads / 32];
  const int64_t off = (int64_t)blockIdx.x * l;
  T acc = 0;
  for (int64_t j = threadIdx.x; j < l; j += blockDim.x) {
    const T s = clamp_fn(s_raw[off + j], mode, clamp);
    const T e = exp(reverse ? -s : s);
    y[off + j] = reverse ? (x[off + j] - t[off + j]) * e : x[off + j] * e + t[off + j];
    if (scale) scale[off + j] = e;
    acc += s;
  }
  acc = block_reduce<T, false>(acc, shared);
  if (threadIdx.x == 0) logdet[blockIdx.x] = reverse ? -acc : acc;
}

// forward (e = e^{s}): gx = gy·e, gs = (gx·x + glogdet)·ds; reverse (e = e^{−s}): gx = gy·e,
// gs = (−gx·(x − t) − glogdet)·ds.
template <typename T>
__global__ void coupling_backward_kernel(const T* __restrict__ gy, const T* __restrict__ glogdet,
                                         const T* __restrict__ x, const T* __restrict__ s_raw,
                                         const T* __restrict__ t, const T* __restrict__ scale, T* __restrict__ gx,
                                         T* __restrict__ gs, int64_t b, int64_t l, T clamp, int mode, bool reverse) {
  const int64_t total = b * l;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const T ds = clamp_deriv(s_raw[e], mode, clamp);
    const T gl = glogdet[e / l];
    const T g = gy[e] * scale[e];
    gx[e] = g;
    gs[e] = reverse ? (-g * (x[e] - t[e]) - gl) * ds : (g * x[e] + gl) * ds;
  }
}

// ------------------------------------------------------------------------------------------
// Attention over regions: one warp per (image, attribute) row of R logits
// ------------------------------------------------------------------------------------------
// Butterfly reductions: every lane receives the result.
template <typename T, bool IsMax>
__device__ __forceinline__ T warp_allreduce(T v) {
  for (int off = 16; off > 0; off >>= 1) {
    const T o = __shfl_xor_sync(0xffffffffu, v, off);
    v = IsMax ? fmax(v, o) : v + o;
  }
  return v;
}

// One block per image. Its warps take the rows i of E_b [A,R] in turn: E_bir <- softmax_r(E_bir·s_br).
// Then, if wbar is not null, wbar_br = s_br·mean_i α_bir, summed over i in row order by one thread
// per region (deterministic, no atomics).
template <typename T>
__global__ void attention_softmax_kernel(T* __restrict__ e, const T* __restrict__ s, T* __restrict__ wbar, int64_t a,
                                         int64_t r) {
  const int64_t n = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const T* cs = s ? s + n * r : nullptr;
  for (int64_t i = warp; i < a; i += nwarps) {
    T* row = e + (n * a + i) * r;
    T vmax = neg_inf<T>();
    for (int64_t j = lane; j < r; j += 32) {
      const T v = cs ? row[j] * cs[j] : row[j];
      row[j] = v;
      vmax = fmax(vmax, v);
    }
    vmax = warp_allreduce<T, true>(vmax);
    T sum = 0;
    for (int64_t j = lane; j < r; j += 32) {
      const T x = exp(row[j] - vmax);
      row[j] = x;
      sum += x;
    }
    const T inv = T(1) / warp_allreduce<T, false>(sum);
    for (int64_t j = lane; j < r; j += 32) row[j] *= inv;
  }
  if (!wbar) return;
  __syncthreads();  // every row of this image is final
  for (int64_t j = threadIdx.x; j < r; j += blockDim.x) {
    T acc = 0;
    for (int64_t i = 0; i < a; ++i) acc += e[(n * a + i) * r + j];
    acc /= static_cast<T>(a);
    wbar[n * r + j] = cs ? acc * cs[j] : acc;
  }
}

// One warp per row (image n = row / a): out = P ⊙ (d − Σ_r P⊙d)·s_n with d = da + row_add_n
// (da and row_add may be null: zero).
template <typename T>
__global__ void attention_softmax_backward_kernel(const T* __restrict__ da, const T* __restrict__ p,
                                                  const T* __restrict__ s, const T* __restrict__ row_add,
                                                  T* __restrict__ out, int64_t rows, int64_t a, int64_t r) {
  const int lane = threadIdx.x & 31;
  const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;  // whole warps leave together, so the shuffles below stay full-warp
  const int64_t n = row / a, off = row * r;
  const T *cs = s ? s + n * r : nullptr, *add = row_add ? row_add + n * r : nullptr;
  T acc = 0;
  for (int64_t j = lane; j < r; j += 32) {
    const T d = (da ? da[off + j] : T(0)) + (add ? add[j] : T(0));
    acc += d * p[off + j];
  }
  const T c = warp_allreduce<T, false>(acc);
  for (int64_t j = lane; j < r; j += 32) {
    const T d = (da ? da[off + j] : T(0)) + (add ? add[j] : T(0));
    const T v = p[off + j] * (d - c);
    out[off + j] = cs ? v * cs[j] : v;
  }
}

// Grid size for the grid-stride element-wise kernels.
inline unsigned int elementwise_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace cuda
}  // namespace zslfast
