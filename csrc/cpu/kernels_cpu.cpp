// CPU epilogue kernels of the zslfast operators, and their registration for the CPU dispatch key.
//
// Every kernel is one pass (a few passes over a row that stays in L1/L2) over its output, rows split
// across threads with at::parallel_for and the inner loop written with at::vec::Vectorized so that
// exp/atan/tanh run as SIMD (Sleef) code. GEMMs are done by the callers in ops_impl.h through ATen.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "../ops_impl.h"

namespace zslfast {
namespace {

using at::vec::Vectorized;

template <typename T>
constexpr T kFreiaAtan = T(0.636);  // FrEIA's stand-in for 2/π in its atan clamp, kept for parity

// Rows per parallel task so that each task touches roughly `work` elements.
inline int64_t grain_for(int64_t row_len, int64_t work = 32768) {
  return std::max<int64_t>(1, work / std::max<int64_t>(1, row_len));
}

template <typename T>
inline T hsum(const Vectorized<T>& v) {
  alignas(64) T buf[Vectorized<T>::size()];
  v.store(buf);
  T s = 0;
  for (int k = 0; k < Vectorized<T>::size(); ++k) s += buf[k];
  return s;
}

template <typename T>
inline T hmax(const Vectorized<T>& v) {
  alignas(64) T buf[Vectorized<T>::size()];
  v.store(buf);
  T s = buf[0];
  for (int k = 1; k < Vectorized<T>::size(); ++k) s = std::max(s, buf[k]);
  return s;
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// Loads n (≤ lane count) elements of an optional per-column vector; `fill` stands in when absent.
template <typename T>
inline Vectorized<T> load_opt(const T* p, int64_t j, int64_t n, T fill) {
  return p ? Vectorized<T>::loadu(p + j, n) : Vectorized<T>(fill);
}

// ---------------------------------------------------------------------------------------------
// Similarity epilogues
// ---------------------------------------------------------------------------------------------
// v_ij = scale·S_ij·rs_i·cs_j + cb_j, computed identically by softmax_rows and argmax_rows.
template <typename T>
inline void affine_row(T* r, int64_t m, T a, const T* cs, const T* cb) {
  using V = Vectorized<T>;
  const V va(a);
  for (int64_t j = 0; j < m; j += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), m - j);
    V v = V::loadu(r + j, n) * va;
    if (cs) v = v * V::loadu(cs + j, n);
    if (cb) v = v + V::loadu(cb + j, n);
    v.store(r + j, n);
  }
}

template <typename T>
inline T row_max(const T* r, int64_t m) {
  using V = Vectorized<T>;
  V vmax(-std::numeric_limits<T>::infinity());
  int64_t j = 0;
  for (; j + V::size() <= m; j += V::size()) vmax = at::vec::maximum(vmax, V::loadu(r + j));
  T best = hmax(vmax);
  for (; j < m; ++j) best = std::max(best, r[j]);
  return best;
}

// In place r <- softmax(r), one row of m values.
template <typename T>
inline void softmax_row(T* r, int64_t m) {
  using V = Vectorized<T>;
  const V vmax(row_max(r, m));
  V vsum(0);
  for (int64_t j = 0; j < m; j += V::size()) {
    const int64_t k = std::min<int64_t>(V::size(), m - j);
    // Lanes past the row end are not stored, but must not be summed: zero them.
    V e = (V::loadu(r + j, k) - vmax).exp();
    if (k < V::size()) e = V::set(V(0), e, k);
    e.store(r + j, k);
    vsum = vsum + e;
  }
  const V inv(T(1) / hsum(vsum));
  for (int64_t j = 0; j < m; j += V::size()) {
    const int64_t k = std::min<int64_t>(V::size(), m - j);
    (V::loadu(r + j, k) * inv).store(r + j, k);
  }
}

// float32 atan for the coupling clamp: Sleef's 1-ULP atan dominated the coupling's run time (it cost
// ~4x the memory traffic of the whole op). Here: atan(x) = sign(x)·(|x| ≤ 1 ? r·P(r²) : π/2 − r·P(r²))
// with r = min(|x|, 1/|x|) and P a degree-7 polynomial fitted by us (iteratively reweighted least
// squares toward minimax relative error on [0, 1]). Max relative error 2.3e-7 over all floats
// (measured against float64 atan), i.e. about 2 ULP. float64 keeps Sleef's atan.
inline Vectorized<float> fast_atan(const Vectorized<float>& x) {
  using V = Vectorized<float>;
  static constexpr float c[8] = {0.9999998807907104f, -0.33331990242004395f, 0.1996973603963852f,
                                 -0.14019560813903809f, 0.09914541244506836f, -0.05949031561613083f,
                                 0.024255450814962387f, -0.004694201983511448f};
#if defined(CPU_CAPABILITY_AVX2)
  // 1/t by the hardware estimate refined with one Newton step (~23 bits), cheaper than a division.
  // t is capped at FLT_MAX so that atan(±inf) works (rcp(FLT_MAX) is 0 and gives inv = 0); the cap
  // keeps a NaN (min_ps returns its second operand when one is NaN), and NaN stays NaN below.
  const __m256 t8 = _mm256_min_ps(_mm256_set1_ps(std::numeric_limits<float>::max()), x.abs());
  const __m256 est = _mm256_rcp_ps(t8);
  const V t = t8, inv = _mm256_mul_ps(est, _mm256_fnmadd_ps(t8, est, _mm256_set1_ps(2.0f)));
  const V r = V::blendv(t, inv, t > V(1.0f));
#else
  const V t = x.abs();
  const V r = at::vec::minimum(t, V(1.0f) / t);  // t = 0 gives 1/t = inf and r = 0
#endif
  const V z = r * r;
  V p(c[7]);
  for (int k = 6; k >= 0; --k) p = at::vec::fmadd(p, z, V(c[k]));
  p = p * r;
  const V res = V::blendv(p, V(1.5707963267948966f) - p, t > V(1.0f));
  return V::blendv(res, res.neg(), x < V(0.0f));
}

template <typename T>
inline Vectorized<T> clamp_atan(const Vectorized<T>& x) {
  return x.atan();
}
template <>
inline Vectorized<float> clamp_atan<float>(const Vectorized<float>& x) {
  return fast_atan(x);
}

// float32 exp for arguments known to satisfy |x| ≤ 80 (coupling log-scales under a clamp mode):
// x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6 polynomial fitted by us like fast_atan, 2^n built in
// the exponent bits. Max relative error 1.1e-7 on [-87, 88]. No overflow/underflow handling, which
// is why it is used only on bounded inputs; elsewhere Sleef's exp runs.
#if defined(CPU_CAPABILITY_AVX2)
inline Vectorized<float> fast_exp_bounded(const Vectorized<float>& xv) {
  static constexpr float c[7] = {1.0f, 1.0f, 0.49999991059303284f, 0.16666419804096222f,
                                 0.04166822507977486f, 0.008374799974262714f, 0.0013836900470778346f};
  const __m256 x = xv;
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.4426950408889634f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);  // ln2 split hi + lo
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(c[6]);
  for (int k = 5; k >= 0; --k) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[k]));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

// e^s for the coupling: the fast float path when the clamp mode bounds |s| (Bounded), else Sleef.
template <typename T, bool Bounded>
inline Vectorized<T> coupling_exp(const Vectorized<T>& s) {
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (Bounded && std::is_same_v<T, float>) return fast_exp_bounded(s);
#endif
  return s.exp();
}

// Clamp modes bound |s| by about `clamp` (atan: clamp·0.636·π/2 < clamp; tanh: clamp).
inline bool log_scale_bounded(ClampMode mode, double clamp) { return mode != ClampMode::None && clamp <= 80.0; }

struct CpuKernels {
  static at::Tensor row_sqnorm(const at::Tensor& x) {
    at::Tensor out = at::empty({x.size(0)}, x.options());
    const int64_t n = x.size(0), d = x.size(1);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "zslfast_row_sqnorm", [&] {
      using V = Vectorized<scalar_t>;
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* op = out.data_ptr<scalar_t>();
      at::parallel_for(0, n, grain_for(d), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t* r = xp + i * d;
          V acc(0);  // zero-filled tail lanes add nothing
          for (int64_t j = 0; j < d; j += V::size()) {
            const V v = V::loadu(r + j, std::min<int64_t>(V::size(), d - j));
            acc = at::vec::fmadd(v, v, acc);
          }
          op[i] = hsum(acc);
        }
      });
    });
    return out;
  }

  static void pairwise_epilogue(at::Tensor& out, const at::Tensor& xr, const at::Tensor& yr, Metric metric) {
    const int64_t n = out.size(0), m = out.size(1);
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "zslfast_pairwise_epilogue", [&] {
      using V = Vectorized<scalar_t>;
      scalar_t* o = out.data_ptr<scalar_t>();
      const scalar_t* xa = xr.const_data_ptr<scalar_t>();
      const scalar_t* ya = yr.const_data_ptr<scalar_t>();
      at::parallel_for(0, n, grain_for(m), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          scalar_t* r = o + i * m;
          const V xi(xa[i]);
          for (int64_t j = 0; j < m; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), m - j);
            V v = V::loadu(r + j, k), yj = V::loadu(ya + j, k);
            if (metric == Metric::Cosine) {
              v = V(1) - v * xi * yj;
            } else {
              v = at::vec::maximum(xi + yj - V(2) * v, V(0));  // rounding can make it slightly negative
              if (metric == Metric::Euclidean) v = v.sqrt();
            }
            v.store(r + j, k);
          }
        }
      });
    });
  }

  static at::Tensor pairwise_grad_epilogue(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& xr,
                                           const at::Tensor& yr, Metric metric) {
    at::Tensor w = at::empty_like(grad);
    const int64_t n = grad.size(0), m = grad.size(1);
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "zslfast_pairwise_grad_epilogue", [&] {
      using V = Vectorized<scalar_t>;
      const scalar_t* g = grad.const_data_ptr<scalar_t>();
      const scalar_t* o = out.const_data_ptr<scalar_t>();
      const scalar_t* xa = xr.const_data_ptr<scalar_t>();
      const scalar_t* ya = yr.const_data_ptr<scalar_t>();
      scalar_t* wp = w.data_ptr<scalar_t>();
      at::parallel_for(0, n, grain_for(m), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t off = i * m;
          const V xi(-xa[i]);
          for (int64_t j = 0; j < m; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), m - j);
            V gv = V::loadu(g + off + j, k), ov = V::loadu(o + off + j, k), r;
            if (metric == Metric::Cosine) {
              r = gv * xi * V::loadu(ya + j, k);  // −G·ix·iy
            } else {  // euclidean: G/(2·d), 0 where d == 0 (the subgradient torch.cdist uses)
              r = V::blendv(V(0), gv / (V(2) * ov), ov > V(0));
            }
            r.store(wp + off + j, k);
          }
        }
      });
    });
    return w;
  }

  static void softmax_rows(at::Tensor& s, double scale, const at::Tensor& rs, const at::Tensor& cs,
                           const at::Tensor& cb, bool exclude_self) {
    const int64_t n = s.size(0), m = s.size(1);
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "zslfast_softmax_rows", [&] {
      using V = Vectorized<scalar_t>;
      scalar_t* sp = s.data_ptr<scalar_t>();
      const scalar_t *rsp = ptr_or_null<scalar_t>(rs), *csp = ptr_or_null<scalar_t>(cs),
                     *cbp = ptr_or_null<scalar_t>(cb);
      at::parallel_for(0, n, grain_for(m, 16384), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          scalar_t* r = sp + i * m;
          affine_row<scalar_t>(r, m, static_cast<scalar_t>(scale) * (rsp ? rsp[i] : scalar_t(1)), csp, cbp);
          if (exclude_self) r[i] = -std::numeric_limits<scalar_t>::infinity();
          softmax_row(r, m);
        }
      });
    });
  }

  static at::Tensor softmax_rows_backward(const at::Tensor& grad, const at::Tensor& P, double scale,
                                          const at::Tensor& rs, const at::Tensor& cs) {
    at::Tensor w = at::empty_like(P);
    const int64_t n = P.size(0), m = P.size(1);
    AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "zslfast_softmax_rows_backward", [&] {
      using V = Vectorized<scalar_t>;
      const scalar_t *g = grad.const_data_ptr<scalar_t>(), *p = P.const_data_ptr<scalar_t>();
      const scalar_t *rsp = ptr_or_null<scalar_t>(rs), *csp = ptr_or_null<scalar_t>(cs);
      scalar_t* wp = w.data_ptr<scalar_t>();
      at::parallel_for(0, n, grain_for(m, 16384), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t off = i * m;
          V acc(0);  // zero-filled tail lanes contribute nothing
          for (int64_t j = 0; j < m; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), m - j);
            acc = acc + V::loadu(g + off + j, k) * V::loadu(p + off + j, k);
          }
          const V c(hsum(acc));
          const V a(static_cast<scalar_t>(scale) * (rsp ? rsp[i] : scalar_t(1)));
          for (int64_t j = 0; j < m; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), m - j);
            V v = V::loadu(p + off + j, k) * (V::loadu(g + off + j, k) - c) * a;
            if (csp) v = v * V::loadu(csp + j, k);
            v.store(wp + off + j, k);
          }
        }
      });
    });
    return w;
  }

  static void project_rows(at::Tensor& a, const at::Tensor& x, const at::Tensor& norm, double eps) {
    const int64_t n = a.size(0), d = a.size(1);
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "zslfast_project_rows", [&] {
      using V = Vectorized<scalar_t>;
      scalar_t* ap = a.data_ptr<scalar_t>();
      const scalar_t *xp = x.const_data_ptr<scalar_t>(), *np = norm.const_data_ptr<scalar_t>();
      at::parallel_for(0, n, grain_for(d), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          if (np[i] < eps) continue;  // normalisation was clamped: its Jacobian is a plain scale
          scalar_t* r = ap + i * d;
          const scalar_t* xr = xp + i * d;
          V acc(0);
          for (int64_t j = 0; j < d; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), d - j);
            acc = acc + V::loadu(r + j, k) * V::loadu(xr + j, k);
          }
          const V coef(hsum(acc) / (np[i] * np[i]));
          for (int64_t j = 0; j < d; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), d - j);
            (V::loadu(r + j, k) - V::loadu(xr + j, k) * coef).store(r + j, k);
          }
        }
      });
    });
  }

  static void argmax_rows(at::Tensor& s, double scale, const at::Tensor& cs, const at::Tensor& cb,
                          at::Tensor& out) {
    const int64_t n = s.size(0), m = s.size(1);
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "zslfast_argmax_rows", [&] {
      scalar_t* sp = s.data_ptr<scalar_t>();
      const scalar_t *csp = ptr_or_null<scalar_t>(cs), *cbp = ptr_or_null<scalar_t>(cb);
      int64_t* op = out.data_ptr<int64_t>();
      at::parallel_for(0, n, grain_for(m), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          scalar_t* r = sp + i * m;
          affine_row<scalar_t>(r, m, static_cast<scalar_t>(scale), csp, cbp);
          const scalar_t best = row_max(r, m);
          int64_t j = 0;
          while (j < m - 1 && r[j] != best) ++j;  // first maximiser, like torch.argmax
          op[i] = j;
        }
      });
    });
  }

  // -------------------------------------------------------------------------------------------
  // Affine coupling
  // -------------------------------------------------------------------------------------------
  // s = clamp_fn(u), for one vector of raw log-scales.
  template <typename T>
  static inline Vectorized<T> clamp_fn(const Vectorized<T>& u, ClampMode mode, T clamp) {
    using V = Vectorized<T>;
    switch (mode) {
      case ClampMode::Atan: return V(clamp * kFreiaAtan<T>) * clamp_atan(u);
      case ClampMode::AtanScaled: return V(clamp * kFreiaAtan<T>) * clamp_atan(u / V(clamp));
      case ClampMode::Tanh: return V(clamp) * (u / V(clamp)).tanh();
      default: return u;
    }
  }

  // ds/du. Rational for the atan modes, so the backward needs no transcendental function there.
  template <typename T>
  static inline Vectorized<T> clamp_deriv(const Vectorized<T>& u, ClampMode mode, T clamp) {
    using V = Vectorized<T>;
    switch (mode) {
      case ClampMode::Atan: return V(clamp * kFreiaAtan<T>) / (V(1) + u * u);
      case ClampMode::AtanScaled: {
        const V v = u / V(clamp);
        return V(kFreiaAtan<T>) / (V(1) + v * v);
      }
      case ClampMode::Tanh: {
        const V th = (u / V(clamp)).tanh();
        return V(1) - th * th;
      }
      default: return V(1);
    }
  }

  // Mode, direction and saving are template parameters so the inner loop has no branches and the
  // two unrolled element groups can interleave freely.
  template <typename T, bool Bounded, ClampMode Mode, bool Reverse, bool Save>
  static void coupling_forward_rows(const T* xp, const T* sp, const T* tp, T* yp, T* lp, T* ep, int64_t b,
                                    int64_t l, T c) {
    using V = Vectorized<T>;
    at::parallel_for(0, b, grain_for(l, 8192), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t off = i * l;
        V acc0(0), acc1(0);
        // One element group: s, e = exp(±s), y (and e saved); `k` lanes valid.
        auto step = [&](int64_t j, int64_t k, V& acc) {
          const V s = clamp_fn<T>(V::loadu(sp + off + j, k), Mode, c);  // tail lanes: u = 0 gives s = 0
          const V e = coupling_exp<T, Bounded>(Reverse ? s.neg() : s);
          const V xv = V::loadu(xp + off + j, k), tv = V::loadu(tp + off + j, k);
          (Reverse ? (xv - tv) * e : xv * e + tv).store(yp + off + j, k);
          if (Save) e.store(ep + off + j, k);
          acc = acc + s;
        };
        int64_t j = 0;
        // Two independent groups per iteration: the atan and exp polynomials are long dependency
        // chains, and interleaving two of them keeps the FMA units busy.
        for (; j + 2 * V::size() <= l; j += 2 * V::size()) {
          step(j, V::size(), acc0);
          step(j + V::size(), V::size(), acc1);
        }
        for (; j < l; j += V::size()) step(j, std::min<int64_t>(V::size(), l - j), acc0);
        const T total = hsum(acc0 + acc1);
        lp[i] = Reverse ? -total : total;
      }
    });
  }

  // Picks the instantiation of coupling_forward_rows for the run-time flags.
  template <typename T, bool Bounded, ClampMode Mode>
  static void coupling_forward_mode(const T* xp, const T* sp, const T* tp, T* yp, T* lp, T* ep, int64_t b,
                                    int64_t l, T c, bool reverse) {
    if (reverse) {
      ep ? coupling_forward_rows<T, Bounded, Mode, true, true>(xp, sp, tp, yp, lp, ep, b, l, c)
         : coupling_forward_rows<T, Bounded, Mode, true, false>(xp, sp, tp, yp, lp, ep, b, l, c);
    } else {
      ep ? coupling_forward_rows<T, Bounded, Mode, false, true>(xp, sp, tp, yp, lp, ep, b, l, c)
         : coupling_forward_rows<T, Bounded, Mode, false, false>(xp, sp, tp, yp, lp, ep, b, l, c);
    }
  }

  template <typename T>
  static void coupling_forward_dispatch(const T* xp, const T* sp, const T* tp, T* yp, T* lp, T* ep, int64_t b,
                                        int64_t l, T c, ClampMode mode, bool reverse) {
    const bool bounded = log_scale_bounded(mode, c);
    switch (mode) {
      case ClampMode::Atan:
        return bounded ? coupling_forward_mode<T, true, ClampMode::Atan>(xp, sp, tp, yp, lp, ep, b, l, c, reverse)
                       : coupling_forward_mode<T, false, ClampMode::Atan>(xp, sp, tp, yp, lp, ep, b, l, c, reverse);
      case ClampMode::AtanScaled:
        return bounded ? coupling_forward_mode<T, true, ClampMode::AtanScaled>(xp, sp, tp, yp, lp, ep, b, l, c, reverse)
                       : coupling_forward_mode<T, false, ClampMode::AtanScaled>(xp, sp, tp, yp, lp, ep, b, l, c,
                                                                                reverse);
      case ClampMode::Tanh:
        return bounded ? coupling_forward_mode<T, true, ClampMode::Tanh>(xp, sp, tp, yp, lp, ep, b, l, c, reverse)
                       : coupling_forward_mode<T, false, ClampMode::Tanh>(xp, sp, tp, yp, lp, ep, b, l, c, reverse);
      default:
        return coupling_forward_mode<T, false, ClampMode::None>(xp, sp, tp, yp, lp, ep, b, l, c, reverse);
    }
  }

  static std::tuple<at::Tensor, at::Tensor> coupling_forward(const at::Tensor& x, const at::Tensor& s_raw,
                                                             const at::Tensor& t, double clamp, ClampMode mode,
                                                             bool reverse, const at::Tensor& scale) {
    at::Tensor y = at::empty_like(x);
    at::Tensor logdet = at::empty({x.size(0)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "zslfast_coupling_forward", [&] {
      coupling_forward_dispatch<scalar_t>(x.const_data_ptr<scalar_t>(), s_raw.const_data_ptr<scalar_t>(),
                                          t.const_data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                          logdet.data_ptr<scalar_t>(),
                                          scale.defined() ? scale.data_ptr<scalar_t>() : nullptr, x.size(0),
                                          x.size(1), static_cast<scalar_t>(clamp), mode, reverse);
    });
    return {y, logdet};
  }

  // forward (y = x·e + t, e = e^{s}):      gx = gy·e, gs = (gx·x + glogdet)·ds/du
  // reverse (y = (x − t)·e, e = e^{−s}):   gx = gy·e, gs = (−gx·(x − t) − glogdet)·ds/du
  static std::tuple<at::Tensor, at::Tensor> coupling_backward(const at::Tensor& gy, const at::Tensor& glogdet,
                                                              const at::Tensor& x, const at::Tensor& s_raw,
                                                              const at::Tensor& t, const at::Tensor& scale,
                                                              double clamp, ClampMode mode, bool reverse) {
    at::Tensor gx = at::empty_like(x), gs = at::empty_like(x);
    const int64_t b = x.size(0), l = x.size(1);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "zslfast_coupling_backward", [&] {
      using V = Vectorized<scalar_t>;
      const scalar_t *gyp = gy.const_data_ptr<scalar_t>(), *glp = glogdet.const_data_ptr<scalar_t>(),
                     *xp = x.const_data_ptr<scalar_t>(), *sp = s_raw.const_data_ptr<scalar_t>(),
                     *tp = reverse ? t.const_data_ptr<scalar_t>() : nullptr, *ep = scale.const_data_ptr<scalar_t>();
      scalar_t *gxp = gx.data_ptr<scalar_t>(), *gsp = gs.data_ptr<scalar_t>();
      const scalar_t c = static_cast<scalar_t>(clamp);
      at::parallel_for(0, b, grain_for(l, 8192), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t off = i * l;
          const V gl(glp[i]);
          for (int64_t j = 0; j < l; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), l - j);
            const V ds = clamp_deriv<scalar_t>(V::loadu(sp + off + j, k), mode, c);
            const V xv = V::loadu(xp + off + j, k);
            const V gxv = V::loadu(gyp + off + j, k) * V::loadu(ep + off + j, k);
            const V gsv = reverse ? (V(0) - gxv * (xv - V::loadu(tp + off + j, k)) - gl) * ds : (gxv * xv + gl) * ds;
            gxv.store(gxp + off + j, k);
            gsv.store(gsp + off + j, k);
          }
        }
      });
    });
    return {gx, gs};
  }

  // The three region reductions stream F_b [C,R] row by row (rows contiguous over regions), so one
  // pass over memory each; threads split the images (or, for region_pool, the B·C rows).
  template <typename T, typename Row>
  static at::Tensor region_accumulate(const at::Tensor& f, Row row_weight) {
    const int64_t b = f.size(0), c = f.size(1), r = f.size(2);
    at::Tensor out = at::zeros({b, r}, f.options());
    const T* fp = f.const_data_ptr<T>();
    T* op = out.data_ptr<T>();
    at::parallel_for(0, b, 1, [&](int64_t begin, int64_t end) {
      using V = Vectorized<T>;
      for (int64_t n = begin; n < end; ++n) {
        T* acc = op + n * r;
        for (int64_t ch = 0; ch < c; ++ch) {
          const T* row = fp + (n * c + ch) * r;
          for (int64_t j = 0; j < r; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), r - j);
            const V x = V::loadu(row + j, k);
            at::vec::fmadd(x, row_weight(n, ch, x), V::loadu(acc + j, k)).store(acc + j, k);
          }
        }
      }
    });
    return out;
  }

  static at::Tensor region_inv_norm(const at::Tensor& f) {
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "zslfast_region_inv_norm", [&] {
      using V = Vectorized<scalar_t>;
      out = region_accumulate<scalar_t>(f, [](int64_t, int64_t, const V& x) { return x; });
    });
    return inv_norm(out.sqrt_());
  }

  static at::Tensor region_dot(const at::Tensor& f, const at::Tensor& v) {
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "zslfast_region_dot", [&] {
      using V = Vectorized<scalar_t>;
      const scalar_t* vp = v.const_data_ptr<scalar_t>();
      const int64_t c = f.size(1);
      out = region_accumulate<scalar_t>(f, [&](int64_t n, int64_t ch, const V&) { return V(vp[n * c + ch]); });
    });
    return out;
  }

  static at::Tensor region_pool(const at::Tensor& f, const at::Tensor& w) {
    const int64_t b = f.size(0), c = f.size(1), r = f.size(2);
    at::Tensor out = at::empty({b, c}, f.options());
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "zslfast_region_pool", [&] {
      using V = Vectorized<scalar_t>;
      const scalar_t *fp = f.const_data_ptr<scalar_t>(), *wp = w.const_data_ptr<scalar_t>();
      scalar_t* op = out.data_ptr<scalar_t>();
      at::parallel_for(0, b * c, grain_for(r), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const scalar_t *x = fp + row * r, *wr = wp + (row / c) * r;
          V acc(0);  // zero-filled tail lanes add nothing
          for (int64_t j = 0; j < r; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), r - j);
            acc = at::vec::fmadd(V::loadu(x + j, k), V::loadu(wr + j, k), acc);
          }
          op[row] = hsum(acc);
        }
      });
    });
    return out;
  }

  // Images split across threads, so each image's ᾱ is accumulated by one thread, in row order
  // (deterministic). Per row: scale by s_b, softmax, add into ᾱ_b; the row stays in L1 throughout.
  static void attention_softmax(at::Tensor& e, const at::Tensor& s, const at::Tensor& wbar) {
    const int64_t b = e.size(0), a = e.size(1), r = e.size(2);
    AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "zslfast_attention_softmax", [&] {
      using V = Vectorized<scalar_t>;
      scalar_t* ep = e.data_ptr<scalar_t>();
      const scalar_t* sp = ptr_or_null<scalar_t>(s);
      scalar_t* wp = wbar.defined() ? wbar.data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, b, grain_for(a * r), [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const scalar_t* cs = sp ? sp + n * r : nullptr;
          scalar_t* w = wp ? wp + n * r : nullptr;
          if (w) std::fill(w, w + r, scalar_t(0));
          for (int64_t i = 0; i < a; ++i) {
            scalar_t* row = ep + (n * a + i) * r;
            if (cs) affine_row<scalar_t>(row, r, scalar_t(1), cs, nullptr);
            softmax_row(row, r);
            if (!w) continue;
            for (int64_t j = 0; j < r; j += V::size()) {
              const int64_t k = std::min<int64_t>(V::size(), r - j);
              (V::loadu(w + j, k) + V::loadu(row + j, k)).store(w + j, k);
            }
          }
          if (!w) continue;
          const V inv_a(scalar_t(1) / static_cast<scalar_t>(a));
          for (int64_t j = 0; j < r; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), r - j);
            V v = V::loadu(w + j, k) * inv_a;
            if (cs) v = v * V::loadu(cs + j, k);
            v.store(w + j, k);
          }
        }
      });
    });
  }

  static at::Tensor attention_softmax_backward(const at::Tensor& da, const at::Tensor& p, const at::Tensor& s,
                                               const at::Tensor& row_add) {
    at::Tensor out = at::empty_like(p);
    const int64_t b = p.size(0), a = p.size(1), r = p.size(2);
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "zslfast_attention_softmax_backward", [&] {
      using V = Vectorized<scalar_t>;
      const scalar_t *pp = p.const_data_ptr<scalar_t>(), *dp = ptr_or_null<scalar_t>(da),
                     *sp = ptr_or_null<scalar_t>(s), *ap = ptr_or_null<scalar_t>(row_add);
      scalar_t* op = out.data_ptr<scalar_t>();
      at::parallel_for(0, b * a, grain_for(r, 16384), [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t n = row / a, off = row * r;
          const scalar_t *cs = sp ? sp + n * r : nullptr, *add = ap ? ap + n * r : nullptr;
          auto d = [&](int64_t j, int64_t k) {
            V v = dp ? V::loadu(dp + off + j, k) : V(0);
            return add ? v + V::loadu(add + j, k) : v;
          };
          V acc(0);  // zero-filled tail lanes contribute nothing
          for (int64_t j = 0; j < r; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), r - j);
            acc = acc + d(j, k) * V::loadu(pp + off + j, k);
          }
          const V c(hsum(acc));
          for (int64_t j = 0; j < r; j += V::size()) {
            const int64_t k = std::min<int64_t>(V::size(), r - j);
            V v = V::loadu(pp + off + j, k) * (d(j, k) - c);
            if (cs) v = v * V::loadu(cs + j, k);
            v.store(op + off + j, k);
          }
        }
      });
    });
    return out;
  }
};

}  // namespace
}  // namespace zslfast

TORCH_LIBRARY_IMPL(zslfast, CPU, m) { ZSLFAST_REGISTER_IMPLS(m, zslfast::CpuKernels); }
