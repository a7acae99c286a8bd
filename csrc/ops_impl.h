// Device-generic implementations of every zslfast operator.
//
// Each operator is "a GEMM through ATen (MKL/cuBLAS) plus a fused element-wise epilogue". The GEMMs
// and small reductions are written once here; the epilogues are the device kernels, supplied by a
// `Kernels` policy class: CpuKernels (cpu/kernels_cpu.cpp) or CudaKernels (cuda/ops_cuda.cu). The
// same template is instantiated for both devices, so the math cannot drift between them.
//
// Kernel policy interface (all tensors contiguous, same dtype, float or double; "opt" = may be an
// undefined Tensor):
//   row_sqnorm(x) -> |x_i|², one pass (x.mul(x).sum(1) would materialise a full-size temporary)
//   pairwise_epilogue(out, xr, yr, metric)          in place on out = x·yᵀ
//   pairwise_grad_epilogue(grad, out, xr, yr, metric) -> grad wrt the inner product x·yᵀ
//   softmax_rows(S, scale, rs opt, cs opt, cb opt, exclude_self)   in place:
//        S_ij <- softmax_j(scale·S_ij·rs_i·cs_j + cb_j), diagonal removed if exclude_self
//   softmax_rows_backward(G, P, scale, rs opt, cs opt) -> P_ij (G_ij − Σ_k G_ik P_ik)·scale·rs_i·cs_j
//   project_rows(A, x, norm, eps)                   in place: A_i −= x_i (x_i·A_i)/|x_i|² if |x_i|≥eps
//   argmax_rows(S, scale, cs opt, cb opt, out)      out_i = argmax_j scale·S_ij·cs_j + cb_j
//   coupling_forward(x, s_raw, t, clamp, mode, reverse, scale opt) -> (y, logdet); writes exp(±s)
//        into scale when it is defined
//   coupling_backward(gy, glogdet, x, s_raw, t opt, scale, clamp, mode, reverse) -> (gx, gs_raw)
//   region_inv_norm(F [B,C,R]) -> 1/max(|F_b[:, r]|, eps) [B,R]
//   region_pool(F [B,C,R], w [B,R]) -> [B,C], out_bc = Σ_r F_bcr·w_br
//   region_dot(F [B,C,R], v [B,C]) -> [B,R], out_br = Σ_c F_bcr·v_bc
//   attention_softmax(E [B,A,R], s opt [B,R], wbar opt [B,R])   in place:
//        E_bir <- softmax_r(E_bir·s_br); when wbar is defined also wbar_br = s_br·mean_i E_bir
//   attention_softmax_backward(da opt [B,A,R], P [B,A,R], s opt, row_add opt [B,R])
//        -> P ⊙ (d − Σ_r P⊙d) · s with d_bir = da_bir + row_add_br (the s-scaled dL/dE)
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <string>
#include <tuple>

namespace zslfast {

enum class Metric { SqEuclidean, Euclidean, Cosine, Dot };
enum class ClampMode { Atan, AtanScaled, Tanh, None };

// Norms below this are clamped when normalising (the same eps as torch.nn.functional.normalize).
constexpr double kNormEps = 1e-12;

inline Metric parse_metric(c10::string_view name) {
  if (name == "sqeuclidean") return Metric::SqEuclidean;
  if (name == "euclidean") return Metric::Euclidean;
  if (name == "cosine") return Metric::Cosine;
  if (name == "dot") return Metric::Dot;
  TORCH_CHECK(false, "zslfast: unknown metric '", std::string(name),
              "'; expected one of sqeuclidean, euclidean, cosine, dot");
}

inline ClampMode parse_clamp_mode(c10::string_view name) {
  if (name == "atan") return ClampMode::Atan;
  if (name == "atan_scaled") return ClampMode::AtanScaled;
  if (name == "tanh") return ClampMode::Tanh;
  if (name == "none") return ClampMode::None;
  TORCH_CHECK(false, "zslfast: unknown clamp_mode '", std::string(name),
              "'; expected one of atan, atan_scaled, tanh, none");
}

inline void check_matrix(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2, "zslfast: ", name, " must be 2-D, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "zslfast: ", name, " must be float32 or float64, got ", t.scalar_type());
}

inline void check_pair(const at::Tensor& x, const at::Tensor& y, const char* xn, const char* yn) {
  check_matrix(x, xn);
  check_matrix(y, yn);
  TORCH_CHECK(x.size(1) == y.size(1), "zslfast: ", xn, " and ", yn, " must have the same feature size, got ",
              x.size(1), " and ", y.size(1));
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "zslfast: ", xn, " and ", yn, " must have the same dtype");
  TORCH_CHECK(x.device() == y.device(), "zslfast: ", xn, " and ", yn, " must be on the same device");
}

inline at::Tensor row_norm(const at::Tensor& x) { return at::linalg_vector_norm(x, 2, {1}); }
inline at::Tensor inv_norm(const at::Tensor& norm) { return norm.clamp_min(kNormEps).reciprocal(); }

// Per-row (xr) and per-column (yr) auxiliaries of the pairwise epilogue: squared norms for the
// euclidean metrics, inverse norms for cosine, nothing for dot.
template <class K>
std::tuple<at::Tensor, at::Tensor> pairwise_aux(const at::Tensor& x, const at::Tensor& y, Metric m) {
  switch (m) {
    case Metric::SqEuclidean:
    case Metric::Euclidean:
      return {K::row_sqnorm(x), K::row_sqnorm(y)};
    case Metric::Cosine:
      return {inv_norm(row_norm(x)), inv_norm(row_norm(y))};
    default:
      return {at::Tensor(), at::Tensor()};
  }
}

// ---------------------------------------------------------------------------------------------
// pairwise_distance
// ---------------------------------------------------------------------------------------------
template <class K>
at::Tensor pairwise_distance(const at::Tensor& x_, const at::Tensor& y_, c10::string_view metric) {
  check_pair(x_, y_, "x", "y");
  const Metric m = parse_metric(metric);
  auto x = x_.contiguous(), y = y_.contiguous();
  at::Tensor out = at::mm(x, y.t());
  if (m == Metric::Dot || out.numel() == 0) return out;
  auto [xr, yr] = pairwise_aux<K>(x, y, m);
  K::pairwise_epilogue(out, xr, yr, m);
  return out;
}

template <class K>
std::tuple<at::Tensor, at::Tensor> pairwise_distance_backward(const at::Tensor& grad_, const at::Tensor& x_,
                                                              const at::Tensor& y_, const at::Tensor& out_,
                                                              c10::string_view metric) {
  const Metric m = parse_metric(metric);
  auto x = x_.contiguous(), y = y_.contiguous(), grad = grad_.contiguous(), out = out_.contiguous();
  if (m == Metric::Dot) return {at::mm(grad, y), at::mm(grad.t(), x)};
  auto [xr, yr] = pairwise_aux<K>(x, y, m);
  if (m == Metric::Cosine) {
    // out = 1 − (x·y)·ix·iy. With W = −G·ix·iy, the gradient is W·y (resp. Wᵀ·x) with the
    // component along x_i (resp. y_j) projected out, the normalisation's Jacobian.
    at::Tensor w = K::pairwise_grad_epilogue(grad, out, xr, yr, m);
    at::Tensor gx = at::mm(w, y), gy = at::mm(w.t(), x);
    K::project_rows(gx, x, row_norm(x), kNormEps);
    K::project_rows(gy, y, row_norm(y), kNormEps);
    return {gx, gy};
  }
  // d(|x|²+|y|²−2x·y) = 2(x·rowsum(G) − G·y) and 2(y·colsum(G) − Gᵀ·x); for euclidean G is first
  // divided by 2·out (zero where the distance is zero).
  at::Tensor g = m == Metric::Euclidean ? K::pairwise_grad_epilogue(grad, out, xr, yr, m) : grad;
  at::Tensor gx = at::mm(g, y).mul_(-2).addcmul_(x, g.sum(1, true), 2);
  at::Tensor gy = at::mm(g.t(), x).mul_(-2).addcmul_(y, g.sum(0).unsqueeze(1), 2);
  return {gx, gy};
}

// ---------------------------------------------------------------------------------------------
// nearest_prototype: blocks of rows, each one GEMM plus a fused row-argmax. Never forms N×C.
// ---------------------------------------------------------------------------------------------
template <class K>
at::Tensor nearest_prototype(const at::Tensor& x_, const at::Tensor& protos_, c10::string_view metric,
                             int64_t block_rows) {
  check_pair(x_, protos_, "x", "prototypes");
  const Metric m = parse_metric(metric);
  TORCH_CHECK(block_rows > 0, "zslfast: block_rows must be positive, got ", block_rows);
  const int64_t n = x_.size(0), c = protos_.size(0);
  at::Tensor idx = at::empty({n}, x_.options().dtype(at::kLong));
  if (n == 0) return idx;
  TORCH_CHECK(c > 0, "zslfast: nearest_prototype needs at least one prototype");
  auto x = x_.contiguous(), p = protos_.contiguous();
  // Maximise a score that orders prototypes like the distance: the per-row terms are dropped.
  double scale = 1.0;
  at::Tensor cs, cb;
  if (m == Metric::SqEuclidean || m == Metric::Euclidean) {
    scale = 2.0;
    cb = K::row_sqnorm(p).neg_();  // argmax 2x·p − |p|²  ==  argmin |x−p|²
  } else if (m == Metric::Cosine) {
    cs = inv_norm(row_norm(p));  // argmax x·p/|p|  ==  argmin 1 − cos (|x| > 0 is a row constant)
  }
  const at::Tensor pt = p.t();
  at::Tensor buf = at::empty({std::min(block_rows, n), c}, x.options());
  for (int64_t start = 0; start < n; start += block_rows) {
    const int64_t rows = std::min(block_rows, n - start);
    at::Tensor s = buf.narrow(0, 0, rows);
    at::mm_out(s, x.narrow(0, start, rows), pt);
    at::Tensor out = idx.narrow(0, start, rows);
    K::argmax_rows(s, scale, cs, cb, out);
  }
  return idx;
}

// ---------------------------------------------------------------------------------------------
// transition_matrix: P = softmax_j(sim(x_i, y_j)/T), fused epilogue on the GEMM result.
// ---------------------------------------------------------------------------------------------
// The epilogue parameters (scale, rs, cs, cb) turning x·yᵀ into sim/T. For −|x−y|² the row term
// −|x_i|² is dropped: it is constant along the softmax axis and cancels exactly.
struct SimParams {
  double scale;
  at::Tensor rs, cs, cb;
};

template <class K>
SimParams sim_params(const at::Tensor& x, const at::Tensor& y, double temperature, Metric m) {
  if (m == Metric::Cosine) return {1.0 / temperature, inv_norm(row_norm(x)), inv_norm(row_norm(y)), at::Tensor()};
  return {2.0 / temperature, at::Tensor(), at::Tensor(), K::row_sqnorm(y).mul_(-1.0 / temperature)};
}

inline Metric transition_metric(c10::string_view metric) {
  const Metric m = parse_metric(metric);
  TORCH_CHECK(m == Metric::Cosine || m == Metric::SqEuclidean,
              "zslfast: transition metric must be 'cosine' or 'sqeuclidean', got '", std::string(metric), "'");
  return m;
}

inline void check_transition(const at::Tensor& x, const at::Tensor& y, double temperature, bool exclude_self) {
  check_pair(x, y, "x", "y");
  TORCH_CHECK(temperature > 0, "zslfast: temperature must be positive, got ", temperature);
  if (exclude_self) {
    TORCH_CHECK(x.size(0) == y.size(0), "zslfast: exclude_self needs as many rows in x as in y, got ",
                x.size(0), " and ", y.size(0));
    TORCH_CHECK(x.size(0) != 1, "zslfast: exclude_self with a single point leaves no transition");
  }
}

// x·xᵀ computing only the blocks on and below the diagonal and mirroring the rest: (nb+1)/(2·nb) of
// the FLOPs of a full GEMM (62.5% with 4 blocks). Blocks stay ≥ 256 rows so each GEMM runs at speed.
inline at::Tensor self_gram(const at::Tensor& x) {
  const int64_t n = x.size(0);
  at::Tensor out = at::empty({n, n}, x.options());
  const int64_t nb = std::min<int64_t>(4, n / 256);
  if (nb <= 1) return at::mm_out(out, x, x.t());
  const int64_t bs = (n + nb - 1) / nb;
  for (int64_t i = 0; i < nb; ++i) {
    const int64_t r0 = i * bs, rl = std::min(bs, n - r0);
    for (int64_t j = 0; j <= i; ++j) {
      const int64_t c0 = j * bs, cl = std::min(bs, n - c0);
      at::Tensor blk = out.narrow(0, r0, rl).narrow(1, c0, cl);
      at::mm_out(blk, x.narrow(0, r0, rl), x.narrow(0, c0, cl).t());
      if (i != j) out.narrow(0, c0, cl).narrow(1, r0, rl).copy_(blk.t());
    }
  }
  return out;
}

// dL/d(sim) for P = softmax(sim/T) given dL/dP, times the cosine normalisation scales:
// W_ij = P_ij (G_ij − Σ_k G_ik P_ik) / T · (ix_i · iy_j for cosine). Zero on a masked diagonal.
template <class K>
at::Tensor dsim(const at::Tensor& grad, const at::Tensor& P, const SimParams& p, double temperature, Metric m) {
  return m == Metric::Cosine ? K::softmax_rows_backward(grad, P, 1.0 / temperature, p.rs, p.cs)
                             : K::softmax_rows_backward(grad, P, 1.0 / temperature, at::Tensor(), at::Tensor());
}

// Gradients of L wrt x and y given W = dL/dsim (scaled as dsim() does), sim_ij = sim(x_i, y_j).
//   cosine:       gx = Π_x(W·y), gy = Π_y(Wᵀ·x), Π the projection of the normalisation Jacobian;
//   −|x − y|²:    gx = 2(W·y − x·rowsum W),  gy = 2(Wᵀ·x − y·colsum W).
template <class K>
std::tuple<at::Tensor, at::Tensor> sim_grads(const at::Tensor& w, const at::Tensor& x, const at::Tensor& y, Metric m) {
  at::Tensor gx = at::mm(w, y), gy = at::mm(w.t(), x);
  if (m == Metric::Cosine) {
    K::project_rows(gx, x, row_norm(x), kNormEps);
    K::project_rows(gy, y, row_norm(y), kNormEps);
  } else {
    gx.sub_(x * w.sum(1, true)).mul_(2);
    gy.sub_(y * w.sum(0).unsqueeze(1)).mul_(2);
  }
  return {gx, gy};
}

// The same when y is x: both gradient paths meet in one GEMM, (W + Wᵀ)·x.
template <class K>
at::Tensor self_sim_grad(const at::Tensor& w, const at::Tensor& x, Metric m) {
  at::Tensor ws = w + w.t();
  at::Tensor gx = at::mm(ws, x);
  if (m == Metric::Cosine) {
    K::project_rows(gx, x, row_norm(x), kNormEps);
  } else {
    gx.sub_(x * ws.sum(1, true)).mul_(2);
  }
  return gx;
}

template <class K>
at::Tensor transition_matrix(const at::Tensor& x_, const at::Tensor& y_, double temperature,
                             c10::string_view metric, bool exclude_self) {
  check_transition(x_, y_, temperature, exclude_self);
  const Metric m = transition_metric(metric);
  auto x = x_.contiguous(), y = y_.contiguous();
  at::Tensor s = at::mm(x, y.t());
  if (s.numel() == 0) return s;
  SimParams p = sim_params<K>(x, y, temperature, m);
  K::softmax_rows(s, p.scale, p.rs, p.cs, p.cb, exclude_self);
  return s;
}

template <class K>
std::tuple<at::Tensor, at::Tensor> transition_matrix_backward(const at::Tensor& grad, const at::Tensor& P,
                                                              const at::Tensor& x_, const at::Tensor& y_,
                                                              double temperature, c10::string_view metric,
                                                              bool /*exclude_self: already zero in P*/) {
  const Metric m = transition_metric(metric);
  auto x = x_.contiguous(), y = y_.contiguous();
  if (P.numel() == 0) return {at::zeros_like(x), at::zeros_like(y)};
  at::Tensor w = dsim<K>(grad.contiguous(), P.contiguous(), sim_params<K>(x, y, temperature, m), temperature, m);
  return sim_grads<K>(w, x, y, m);
}

// Transitions of a set to itself (y is x): symmetric Gram matrix and a one-GEMM backward.
template <class K>
at::Tensor self_transition_matrix(const at::Tensor& x_, double temperature, c10::string_view metric,
                                  bool exclude_self) {
  check_transition(x_, x_, temperature, exclude_self);
  const Metric m = transition_metric(metric);
  auto x = x_.contiguous();
  at::Tensor s = self_gram(x);
  if (s.numel() == 0) return s;
  SimParams p = sim_params<K>(x, x, temperature, m);
  K::softmax_rows(s, p.scale, p.rs, p.cs, p.cb, exclude_self);
  return s;
}

template <class K>
at::Tensor self_transition_matrix_backward(const at::Tensor& grad, const at::Tensor& P, const at::Tensor& x_,
                                           double temperature, c10::string_view metric, bool /*exclude_self*/) {
  const Metric m = transition_metric(metric);
  auto x = x_.contiguous();
  if (P.numel() == 0) return at::zeros_like(x);
  at::Tensor w = dsim<K>(grad.contiguous(), P.contiguous(), sim_params<K>(x, x, temperature, m), temperature, m);
  return self_sim_grad<K>(w, x, m);
}

// ---------------------------------------------------------------------------------------------
// random_walk_landing: T_t = P_cx · P_xx^t · P_xc by propagating Q_{t+1} = Q_t · P_xx (K×M), never
// forming P_xx^t. Cost O(steps·K·M²) instead of O(steps·M³). P_xc and P_cx share one GEMM
// (S_cx = S_xcᵀ), P_xx uses the symmetric Gram matrix.
// ---------------------------------------------------------------------------------------------
template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> random_walk_landing(
    const at::Tensor& centers_, const at::Tensor& points_, int64_t steps, double temperature,
    c10::string_view metric) {
  check_pair(centers_, points_, "centers", "points");
  TORCH_CHECK(steps >= 0, "zslfast: steps must be non-negative, got ", steps);
  check_transition(points_, points_, temperature, true);
  const Metric m = transition_metric(metric);
  auto c = centers_.contiguous(), x = points_.contiguous();
  const int64_t kk = c.size(0), mm = x.size(0);
  at::Tensor p_xc = at::mm(x, c.t());
  at::Tensor p_cx = p_xc.t().contiguous();
  {
    SimParams pxc = sim_params<K>(x, c, temperature, m), pcx = sim_params<K>(c, x, temperature, m);
    K::softmax_rows(p_xc, pxc.scale, pxc.rs, pxc.cs, pxc.cb, false);
    K::softmax_rows(p_cx, pcx.scale, pcx.rs, pcx.cs, pcx.cb, false);
  }
  at::Tensor p_xx = self_transition_matrix<K>(x, temperature, metric, true);
  at::Tensor q = at::empty({steps + 1, kk, mm}, c.options());
  q[0].copy_(p_cx);
  for (int64_t t = 0; t < steps; ++t) {
    at::Tensor next = q[t + 1];
    at::mm_out(next, q[t], p_xx);
  }
  // All landings in one GEMM: [(steps+1)·K, M] × [M, K].
  at::Tensor land = at::mm(q.view({(steps + 1) * kk, mm}), p_xc).view({steps + 1, kk, kk});
  return {land, q, p_xx, p_xc};
}

template <class K>
std::tuple<at::Tensor, at::Tensor> random_walk_landing_backward(const at::Tensor& grad_, const at::Tensor& q,
                                                                const at::Tensor& p_xx, const at::Tensor& p_xc,
                                                                const at::Tensor& centers_,
                                                                const at::Tensor& points_, double temperature,
                                                                c10::string_view metric) {
  const Metric m = transition_metric(metric);
  auto c = centers_.contiguous(), x = points_.contiguous(), grad = grad_.contiguous();
  const int64_t s1 = grad.size(0), kk = c.size(0), mm = x.size(0), steps = s1 - 1;
  at::Tensor qf = q.view({s1 * kk, mm}), gf = grad.view({s1 * kk, kk});
  // dP_xc = Σ_t Q_tᵀ G_t, one GEMM over all steps.
  at::Tensor d_xc = at::mm(qf.t(), gf);
  // R_t = dL/dQ_t = G_t P_xcᵀ + R_{t+1} P_xxᵀ, swept backwards; dP_cx = R_0.
  at::Tensor r = at::mm(gf, p_xc.t()).view({s1, kk, mm});
  for (int64_t t = steps - 1; t >= 0; --t) r[t].addmm_(r[t + 1], p_xx.t());
  // P_xc and P_cx come from one similarity matrix: their dsim add up (P_cx's transposed) and go
  // through one pair of GEMMs.
  at::Tensor w_xc = dsim<K>(d_xc, p_xc.contiguous(), sim_params<K>(x, c, temperature, m), temperature, m);
  at::Tensor w_cx = dsim<K>(r[0].contiguous(), q[0], sim_params<K>(c, x, temperature, m), temperature, m);
  auto [gx, gc] = sim_grads<K>(w_xc.add_(w_cx.t()), x, c, m);
  if (steps > 0) {
    // dP_xx = Σ_{t<steps} Q_tᵀ R_{t+1}, one GEMM.
    at::Tensor d_xx = at::mm(q.narrow(0, 0, steps).reshape({steps * kk, mm}).t(),
                             r.narrow(0, 1, steps).reshape({steps * kk, mm}));
    gx.add_(self_transition_matrix_backward<K>(d_xx, p_xx, x, temperature, metric, true));
  }
  return {gc, gx};
}

// ---------------------------------------------------------------------------------------------
// affine_coupling: pure element-wise; the device kernels do all of it in one pass.
// ---------------------------------------------------------------------------------------------
inline void check_coupling(const at::Tensor& x, const at::Tensor& s, const at::Tensor& t) {
  check_matrix(x, "x");
  TORCH_CHECK(s.sizes() == x.sizes() && t.sizes() == x.sizes(), "zslfast: affine_coupling needs x, s_raw and t of ",
              "the same shape, got ", x.sizes(), ", ", s.sizes(), ", ", t.sizes());
  TORCH_CHECK(s.scalar_type() == x.scalar_type() && t.scalar_type() == x.scalar_type(),
              "zslfast: affine_coupling inputs must share one dtype");
  TORCH_CHECK(s.device() == x.device() && t.device() == x.device(),
              "zslfast: affine_coupling inputs must be on one device");
}

template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor> affine_coupling(const at::Tensor& x, const at::Tensor& s_raw,
                                                               const at::Tensor& t, double clamp,
                                                               c10::string_view clamp_mode, bool reverse,
                                                               bool save_scale) {
  check_coupling(x, s_raw, t);
  const ClampMode mode = parse_clamp_mode(clamp_mode);
  TORCH_CHECK(mode == ClampMode::None || clamp > 0, "zslfast: clamp must be positive, got ", clamp);
  at::Tensor scale = save_scale ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::empty({0}, x.options());
  auto [y, logdet] = K::coupling_forward(x.contiguous(), s_raw.contiguous(), t.contiguous(), clamp, mode, reverse,
                                         save_scale ? scale : at::Tensor());
  return {y, logdet, scale};
}

template <class K>
std::tuple<at::Tensor, at::Tensor> affine_coupling_backward(const at::Tensor& gy, const at::Tensor& glogdet,
                                                            const at::Tensor& x, const at::Tensor& s_raw,
                                                            const c10::optional<at::Tensor>& t,
                                                            const at::Tensor& scale, double clamp,
                                                            c10::string_view clamp_mode, bool reverse) {
  const ClampMode mode = parse_clamp_mode(clamp_mode);
  TORCH_CHECK(!reverse || (t.has_value() && t->defined()), "zslfast: reverse coupling backward needs t");
  TORCH_CHECK(scale.sizes() == x.sizes(), "zslfast: coupling backward needs the scale saved by the forward ",
              "(call affine_coupling with save_scale=True)");
  at::Tensor tt = reverse ? t->contiguous() : at::Tensor();
  return K::coupling_backward(gy.contiguous(), glogdet.contiguous(), x.contiguous(), s_raw.contiguous(), tt,
                              scale.contiguous(), clamp, mode, reverse);
}

// ---------------------------------------------------------------------------------------------
// attention_pool: attribute attention over image regions (DAZLE / SC-EGG). The per-region L2
// normalisation is folded into scales s [B,R], so no normalised copy of the features is made:
//   E_b = (Q·F_b)·diag(s_b)  (one batched GEMM),  α = softmax_r(E)  (fused with the scale),
//   mean:  g_b = F_b·(s_b ⊙ mean_i α_b)  (a GEMV; H [B,A,C] is never formed),
//   none:  H_b = (α_b·diag(s_b))·F_bᵀ   (a second batched GEMM).
// ---------------------------------------------------------------------------------------------
inline bool parse_reduce_mean(c10::string_view reduce) {
  if (reduce == "mean") return true;
  if (reduce == "none") return false;
  TORCH_CHECK(false, "zslfast: unknown reduce '", std::string(reduce), "'; expected one of mean, none");
}

inline void check_attention(const at::Tensor& f, const at::Tensor& q) {
  TORCH_CHECK(f.dim() == 3, "zslfast: features must be 3-D [B,C,R], got shape ", f.sizes());
  check_matrix(q, "queries");
  TORCH_CHECK(f.scalar_type() == q.scalar_type(), "zslfast: features and queries must have the same dtype");
  TORCH_CHECK(f.device() == q.device(), "zslfast: features and queries must be on the same device");
  TORCH_CHECK(f.size(1) == q.size(1), "zslfast: features have ", f.size(1), " channels but queries have ", q.size(1));
  TORCH_CHECK(f.size(2) > 0, "zslfast: features need at least one region");
  TORCH_CHECK(q.size(0) > 0, "zslfast: queries need at least one attribute");
}

template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_pool(const at::Tensor& features_, const at::Tensor& queries_,
                                                              bool normalize, c10::string_view reduce) {
  check_attention(features_, queries_);
  const bool mean = parse_reduce_mean(reduce);
  auto f = features_.contiguous(), q = queries_.contiguous();
  const int64_t b = f.size(0), c = f.size(1), r = f.size(2), a = q.size(0);
  at::Tensor s = normalize ? K::region_inv_norm(f) : at::empty({0}, f.options());
  at::Tensor scales = normalize ? s : at::Tensor();
  // [B,A,R]: Q broadcast over the batch at stride 0, no copy. (at::matmul would pick another plan,
  // with a full transposed copy of F, whenever Q requires grad.)
  at::Tensor attn = at::bmm(q.expand({b, a, c}), f);
  if (mean) {
    at::Tensor wbar = at::empty({b, r}, f.options());
    if (attn.numel() > 0) K::attention_softmax(attn, scales, wbar);
    return {K::region_pool(f, wbar), attn, s};
  }
  if (attn.numel() > 0) K::attention_softmax(attn, scales, at::Tensor());
  at::Tensor scaled = normalize ? attn * s.unsqueeze(1) : attn;
  return {at::bmm(scaled, f.transpose(1, 2)), attn, s};
}

// grad_pooled and grad_attn may be undefined (no gradient flows into that output). Returns
// (grad_features, grad_queries); grad_features is an empty tensor unless features_grad.
template <class K>
std::tuple<at::Tensor, at::Tensor> attention_pool_backward(const c10::optional<at::Tensor>& grad_pooled_,
                                                           const c10::optional<at::Tensor>& grad_attn_,
                                                           const at::Tensor& features_, const at::Tensor& queries_,
                                                           const at::Tensor& attn_, const at::Tensor& s_,
                                                           bool normalize, c10::string_view reduce,
                                                           bool features_grad) {
  const bool mean = parse_reduce_mean(reduce);
  auto f = features_.contiguous(), q = queries_.contiguous(), attn = attn_.contiguous();
  const int64_t b = f.size(0), c = f.size(1), r = f.size(2), a = q.size(0);
  const bool has_gp = grad_pooled_.has_value() && grad_pooled_->defined();
  const bool has_ga = grad_attn_.has_value() && grad_attn_->defined();
  at::Tensor gp = has_gp ? grad_pooled_->contiguous() : at::Tensor();
  at::Tensor s = normalize ? s_.contiguous() : at::Tensor();
  // dL/dα = (pooled path) + grad_attn. mean: s_br·(F_bᵀ·dg_b)_r / A added to every row i (a GEMV);
  // none: s ⊙ (dH_b·F_b) (a batched GEMM).
  at::Tensor da = has_ga ? grad_attn_->contiguous() : at::Tensor();
  at::Tensor row_add;
  if (has_gp) {
    if (mean) {
      row_add = K::region_dot(f, gp).div_(static_cast<double>(a));
      if (normalize) row_add.mul_(s);
    } else {
      at::Tensor dh = at::bmm(gp, f);
      if (normalize) dh.mul_(s.unsqueeze(1));
      da = has_ga ? dh.add_(da) : dh;
    }
  }
  at::Tensor de = attn.numel() > 0 ? K::attention_softmax_backward(da, attn, s, row_add) : at::zeros_like(attn);
  // dQ = Σ_b dEs_b·F_bᵀ, accumulated image by image: a [A,B·R]×[B·R,C] GEMM would need a
  // transposed copy of the whole feature batch.
  at::Tensor gq = at::zeros_like(q);
  for (int64_t i = 0; i < b; ++i) gq.addmm_(de[i], f[i].t());
  if (!features_grad) return {at::empty({0}, f.options()), gq};
  // G = s ⊙ dF̂ = Qᵀ·dEs + (mean: dg ⊗ wbar | none: dHᵀ·(α·diag(s))); dF = G − s²·F·⟨F, G⟩ per region.
  at::Tensor g = at::bmm(q.t().expand({b, c, a}), de);
  if (has_gp) {
    at::Tensor scaled = normalize ? attn * s.unsqueeze(1) : attn;
    if (mean) {
      g.add_(gp.unsqueeze(2) * scaled.mean(1).unsqueeze(1));
    } else {
      g.add_(at::bmm(gp.transpose(1, 2), scaled));
    }
  }
  if (normalize) {
    // Regions clamped at the eps norm have a constant scale: no projection term.
    at::Tensor coef = (f * g).sum(1).mul_(s).mul_(s).mul_(s.lt(1.0 / kNormEps));
    g.sub_(f * coef.unsqueeze(1));
  }
  return {g, gq};
}

}  // namespace zslfast

// Registers every operator of the library for one dispatch key with the kernels of policy K.
#define ZSLFAST_REGISTER_IMPLS(m, K)                                                          \
  do {                                                                                        \
    m.impl("pairwise_distance", &zslfast::pairwise_distance<K>);                              \
    m.impl("pairwise_distance_backward", &zslfast::pairwise_distance_backward<K>);            \
    m.impl("nearest_prototype", &zslfast::nearest_prototype<K>);                              \
    m.impl("transition_matrix", &zslfast::transition_matrix<K>);                              \
    m.impl("transition_matrix_backward", &zslfast::transition_matrix_backward<K>);            \
    m.impl("self_transition_matrix", &zslfast::self_transition_matrix<K>);                    \
    m.impl("self_transition_matrix_backward", &zslfast::self_transition_matrix_backward<K>);  \
    m.impl("random_walk_landing", &zslfast::random_walk_landing<K>);                          \
    m.impl("random_walk_landing_backward", &zslfast::random_walk_landing_backward<K>);        \
    m.impl("affine_coupling", &zslfast::affine_coupling<K>);                                  \
    m.impl("affine_coupling_backward", &zslfast::affine_coupling_backward<K>);                \
    m.impl("attention_pool", &zslfast::attention_pool<K>);                                    \
    m.impl("attention_pool_backward", &zslfast::attention_pool_backward<K>);                  \
  } while (0)
