// Operator schemas of the zslfast library and the (empty) Python module that loads them.
//
// Importing zslfast._C runs the static TORCH_LIBRARY initialisers below and in cpu/ and cuda/;
// the Python side then reaches the operators as torch.ops.zslfast.*. Every backward is its own
// operator so that torch.compile/export can trace through autograd (see zslfast/ops/_register.py).
#include <Python.h>
#include <torch/library.h>

#ifdef WITH_CUDA
int64_t zslfast_cuda_runtime_version();  // defined in cuda/ops_cuda.cu
#endif

namespace {
// CUDA runtime version the extension was compiled with (e.g. 13000), -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return zslfast_cuda_runtime_version();
#else
  return -1;
#endif
}
}  // namespace

extern "C" {
// The module has no Python functions; it exists so that `import zslfast._C` loads this library.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(zslfast, m) {
  m.def("cuda_version() -> int", &cuda_version);

  m.def("pairwise_distance(Tensor x, Tensor y, str metric) -> Tensor");
  m.def("pairwise_distance_backward(Tensor grad, Tensor x, Tensor y, Tensor out, str metric) -> (Tensor, Tensor)");

  m.def("nearest_prototype(Tensor x, Tensor prototypes, str metric, int block_rows) -> Tensor");

  m.def("transition_matrix(Tensor x, Tensor y, float temperature, str metric, bool exclude_self) -> Tensor");
  m.def("transition_matrix_backward(Tensor grad, Tensor P, Tensor x, Tensor y, float temperature, str metric, "
        "bool exclude_self) -> (Tensor, Tensor)");

  // Transitions of a set to itself (the y-is-x case of transition_matrix): half-cost symmetric GEMM.
  m.def("self_transition_matrix(Tensor x, float temperature, str metric, bool exclude_self) -> Tensor");
  m.def("self_transition_matrix_backward(Tensor grad, Tensor P, Tensor x, float temperature, str metric, "
        "bool exclude_self) -> Tensor");

  // Returns the landing probabilities T [steps+1,K,K] plus what the backward needs: the propagated
  // walks Q [steps+1,K,M] (Q[0] = P_cx), P_xx [M,M] and P_xc [M,K].
  m.def("random_walk_landing(Tensor centers, Tensor points, int steps, float temperature, str metric) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("random_walk_landing_backward(Tensor grad, Tensor Q, Tensor P_xx, Tensor P_xc, Tensor centers, "
        "Tensor points, float temperature, str metric) -> (Tensor, Tensor)");

  // Also returns the per-element scale e = exp(±s) when save_scale (else an empty tensor): the
  // backward reads it instead of recomputing atan/tanh and exp. Only y and logdet are differentiable.
  m.def("affine_coupling(Tensor x, Tensor s_raw, Tensor t, float clamp, str clamp_mode, bool reverse, "
        "bool save_scale) -> (Tensor, Tensor, Tensor)");
  // grad wrt x and s_raw; the grad wrt t is grad_y (forward) or -grad_x (reverse) and is formed in
  // Python without another pass. t is needed only in reverse mode.
  m.def("affine_coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor s_raw, Tensor? t, "
        "Tensor scale, float clamp, str clamp_mode, bool reverse) -> (Tensor, Tensor)");

  // Returns (pooled, attn, scale): pooled [B,C] (reduce="mean") or [B,A,C] ("none"), attn [B,A,R]
  // and the per-region inverse norms [B,R] (empty without normalize), saved for the backward.
  m.def("attention_pool(Tensor features, Tensor queries, bool normalize, str reduce) -> (Tensor, Tensor, Tensor)");
  // (grad_features, grad_queries); grad_features is empty unless features_grad.
  m.def("attention_pool_backward(Tensor? grad_pooled, Tensor? grad_attn, Tensor features, Tensor queries, "
        "Tensor attn, Tensor scale, bool normalize, str reduce, bool features_grad) -> (Tensor, Tensor)");
}
