#!/usr/bin/env bash
# Compiles every CUDA kernel of zslfast with plain nvcc, on machines without a GPU or a CUDA torch.
# The kernels (csrc/cuda/kernels.cuh) need only the CUDA runtime; the torch glue (ops_cuda.cu) is
# compiled by `pip install` on machines whose torch has CUDA. Exits 0 with a note if nvcc is absent.
#   ARCHS="90 80" tools/check_cuda.sh     # architectures to generate code for (default: 80 90)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || true)}
if [ -z "$NVCC" ]; then
  echo "check_cuda: nvcc not found; skipping the CUDA compile check"
  exit 0
fi
ARCHS=${ARCHS:-"80 90"}
gencode=()
for a in $ARCHS; do gencode+=("-gencode=arch=compute_${a},code=sm_${a}"); done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$NVCC" --version | tail -n 1
set -x
"$NVCC" -std=c++17 -O3 --expt-relaxed-constexpr -Werror all-warnings "${gencode[@]}" \
  -c tools/cuda_check.cu -o "$out/kernels.o"
set +x
# Every kernel must have been generated, for float and double (host stubs visible to nm).
expected=$(grep -c "template __global__" tools/cuda_check.cu)
expected=$((expected * 2))
found=$(nm -C "$out/kernels.o" | grep -v "clone" | grep -cE "zslfast::cuda::[a-z_]+_kernel<(float|double)>" || true)
echo "check_cuda: archs [$ARCHS]: $found of $expected kernel instantiations compiled"
[ "$found" -eq "$expected" ] || { echo "check_cuda: missing kernel instantiations" >&2; exit 1; }

# Second stage: the torch-facing glue (ops_cuda.cu, with ops_impl.h), compiled against the headers
# of the installed torch. A CPU-only torch wheel ships the c10/cuda headers but not the one that
# CMake generates (c10/cuda/impl/cuda_cmake_macros.h); a one-line stand-in is supplied for this
# compile-only check. Skipped if torch is not importable. Set SKIP_GLUE=1 to skip.
PY=${PYTHON:-python}
if [ "${SKIP_GLUE:-0}" != "1" ] && TORCH_INC=$("$PY" -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'include'))" 2>/dev/null); then
  PY_INC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  shim=()
  if [ ! -f "$TORCH_INC/c10/cuda/impl/cuda_cmake_macros.h" ]; then
    mkdir -p "$out/shim/c10/cuda/impl"
    printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$out/shim/c10/cuda/impl/cuda_cmake_macros.h"
    shim=(-I "$out/shim")
  fi
  first_arch=${ARCHS%% *}
  set -x
  "$NVCC" -std=c++20 -O1 --expt-relaxed-constexpr -DWITH_CUDA -gencode="arch=compute_${first_arch},code=sm_${first_arch}" \
    "${shim[@]}" -I "$TORCH_INC" -I "$TORCH_INC/torch/csrc/api/include" -I "$PY_INC" \
    -diag-suppress 20012,20014 -c csrc/cuda/ops_cuda.cu -o "$out/ops_cuda.o"
  set +x
  echo "check_cuda: torch glue csrc/cuda/ops_cuda.cu compiled against $("$PY" -c 'import torch; print(torch.__version__)') headers"
else
  echo "check_cuda: torch not importable (or SKIP_GLUE=1); glue compile skipped"
fi
