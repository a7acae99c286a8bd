// Compile-only check of every CUDA kernel (tools/check_cuda.sh): explicit instantiation for float
// and double forces nvcc to generate device code for each, without any torch headers.
#include "../csrc/cuda/kernels.cuh"

namespace zc = zslfast::cuda;

#define ZSLFAST_INSTANTIATE(T)                                                                              \
  template __global__ void zc::row_sqnorm_kernel<T>(const T*, T*, int64_t, int64_t);                         \
  template __global__ void zc::pairwise_epilogue_kernel<T>(T*, const T*, const T*, int64_t, int64_t, int);   \
  template __global__ void zc::pairwise_grad_kernel<T>(const T*, const T*, const T*, const T*, T*, int64_t, \
                                                       int64_t, int);                                       \
  template __global__ void zc::softmax_rows_kernel<T>(T*, int64_t, int64_t, T, const T*, const T*, const T*, \
                                                      bool);                                                \
  template __global__ void zc::softmax_rows_backward_kernel<T>(const T*, const T*, T*, int64_t, int64_t, T,  \
                                                               const T*, const T*);                         \
  template __global__ void zc::project_rows_kernel<T>(T*, const T*, const T*, int64_t, int64_t, T);          \
  template __global__ void zc::argmax_rows_kernel<T>(const T*, int64_t, int64_t, T, const T*, const T*,      \
                                                     int64_t*);                                             \
  template __global__ void zc::coupling_forward_kernel<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, \
                                                          int64_t, T, int, bool);                           \
  template __global__ void zc::coupling_backward_kernel<T>(const T*, const T*, const T*, const T*, const T*, \
                                                           const T*, T*, T*, int64_t, int64_t, T, int, bool); \
  template __global__ void zc::attention_softmax_kernel<T>(T*, const T*, T*, int64_t, int64_t);              \
  template __global__ void zc::attention_softmax_backward_kernel<T>(const T*, const T*, const T*, const T*,  \
                                                                    T*, int64_t, int64_t, int64_t);

ZSLFAST_INSTANTIATE(float)
ZSLFAST_INSTANTIATE(double)
