"""Build script for zslfast and its one compiled extension, ``zslfast._C``.

The extension always contains the CPU kernels. CUDA kernels are added when torch itself was built
with CUDA and an nvcc of the same major version is found (or ``FORCE_CUDA=1``). Whether a GPU is
visible is irrelevant: build machines and CI usually have none.

Environment switches
    FORCE_CUDA=1          build CUDA kernels even if the checks below say no (fails loudly if it cannot)
    FORCE_ONLY_CPU=1      never build CUDA kernels
    TORCH_CUDA_ARCH_LIST  CUDA architectures, e.g. "9.0" (read by torch.utils.cpp_extension)
    MAX_JOBS              parallel compile jobs (read by torch.utils.cpp_extension / ninja)
    DEBUG=1               -O0 -g, no vectorisation flags
    ZSLFAST_REQUIRE_EXT=1 fail the install when the extension cannot be built (by default an install
                          without a working C++ compiler goes on without it: zslfast then runs its
                          pure-PyTorch fallback, and says so)
    ZSLFAST_CPU_CAPABILITY=DEFAULT|AVX2|AVX512
                          SIMD level of the CPU kernels; defaults to what torch reports for this
                          machine (so a plain source install is tuned for the machine it runs on).
                          Use DEFAULT for a portable binary.
"""
import glob
import os
import re
import subprocess
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - exercised only by isolated builds
    sys.stderr.write(
        "\nzslfast: torch is not importable in this build environment.\n"
        "zslfast compiles against the torch you already have, so it must be built without build\n"
        "isolation:\n\n    pip install torch   # first, the build you want\n"
        "    pip install --no-build-isolation .\n\n"
        "(torch is deliberately not a build requirement: an isolated build would download a\n"
        "different multi-GB torch and produce an extension that does not match yours.)\n\n"
    )
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"


def _flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _nvcc_version():
    """(major, minor) of the nvcc that cpp_extension would use, or None."""
    home = cpp_extension.CUDA_HOME
    nvcc = os.path.join(home, "bin", "nvcc") if home else None
    if not nvcc or not os.path.exists(nvcc):
        return None
    try:
        out = subprocess.check_output([nvcc, "--version"], text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _want_cuda():
    """Decide whether to compile the CUDA kernels; returns (bool, reason)."""
    if _flag("FORCE_ONLY_CPU"):
        return False, "FORCE_ONLY_CPU=1"
    if _flag("FORCE_CUDA"):
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} was built without CUDA"
    nvcc = _nvcc_version()
    if nvcc is None:
        return False, "no nvcc found (set CUDA_HOME)"
    torch_major = int(torch.version.cuda.split(".")[0])
    if nvcc[0] != torch_major:
        return False, (f"nvcc {nvcc[0]}.{nvcc[1]} does not match the CUDA {torch.version.cuda} "
                       "torch was built with (major versions must agree)")
    return True, f"torch CUDA {torch.version.cuda}, nvcc {nvcc[0]}.{nvcc[1]}"


def _openmp_flags():
    """Use OpenMP only when torch's ATen parallel backend is OpenMP, so at::parallel_for in our
    kernels runs on the same thread pool as torch's own."""
    info = torch.__config__.parallel_info()
    if "ATen parallel backend: OpenMP" in info and sys.platform != "darwin":
        return ["-DAT_PARALLEL_OPENMP", "-fopenmp"], ["-fopenmp"]
    print("zslfast: torch does not use OpenMP; compiling without it")
    return [], []


def _simd_flags():
    level = os.environ.get("ZSLFAST_CPU_CAPABILITY")
    if level is None:
        level = torch.backends.cpu.get_cpu_capability()
    level = level.upper()
    if level.startswith("AVX512"):
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if level == "AVX2":
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return ["-DCPU_CAPABILITY=DEFAULT"]


def extensions():
    debug = _flag("DEBUG")
    use_cuda, why = _want_cuda()
    omp_cflags, omp_lflags = _openmp_flags()

    opt = ["-O0", "-g"] if debug else ["-O3"]
    # No -std flag: torch.utils.cpp_extension picks the standard its headers need (C++20 for 2.13).
    cxx = [*opt, *omp_cflags]
    if not debug:
        cxx += _simd_flags()
    define_macros = [("Py_LIMITED_API", "0x03090000")]
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))

    if use_cuda:
        cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        print(f"zslfast: building CPU + CUDA kernels ({why})")
        return [cpp_extension.CUDAExtension(
            "zslfast._C", sources + cuda_sources,
            define_macros=define_macros + [("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": [*opt, "--expt-relaxed-constexpr",
                                                     *( ["-lineinfo"] if not debug else ["-G"])]},
            extra_link_args=omp_lflags, py_limited_api=True)]
    print(f"zslfast: building CPU kernels only ({why})")
    return [cpp_extension.CppExtension(
        "zslfast._C", sources, define_macros=define_macros,
        extra_compile_args={"cxx": cxx}, extra_link_args=omp_lflags, py_limited_api=True)]


class OptionalBuildExtension(cpp_extension.BuildExtension):
    """Build the extension when a C++ toolchain works; otherwise install without it (one line says
    so, and zslfast's operators use their pure-PyTorch references), unless ZSLFAST_REQUIRE_EXT=1."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, a compiler that cannot build against this torch, ...
            if _flag("ZSLFAST_REQUIRE_EXT"):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            sys.stderr.write(f"zslfast: the C++ extension was not built ({first}); installing without it: the "
                             "operators use their pure-PyTorch fallback (slower). Install a C++ compiler and "
                             "reinstall to build it.\n")


setup(
    name="zslfast",
    version=VERSION,
    description="Zero-shot learning methods in PyTorch with fused C++/CUDA operators",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["zslfast", "zslfast.*"]),
    package_data={"zslfast": ["config/methods/*.yaml", "golden/*.json", "data/like/*.npz", "data/like/*.npy"]},
    python_requires=">=3.9",
    # torch is a run-time requirement only; a range any recent torch satisfies, so pip never
    # replaces the torch the extension was compiled against.
    # Everything zslfast imports at run time. scikit-learn: GRW-CZSL's continual split is the
    # original's train_test_split (random_state=42), reproduced by calling it.
    install_requires=["torch>=2.4", "numpy", "scipy", "scikit-learn", "pyyaml", "tqdm"],
    extras_require={
        # h5py reads and writes SC-EGG's region-feature HDF5 files (zslfast.data.regions)
        "regions": ["h5py"],
        # feature extraction from images (zslfast.data.extract): h5py plus Pillow to decode images
        "extract": ["h5py", "pillow"],
        # pytest and pytest-timeout (the suite's per-test limit); FrEIA for the flow parity tests and
        # the GSMFlow benchmark baseline;
        # h5py and Pillow so that the region-data and extraction tests run; the plotting and
        # TensorBoard extras so that their tests run
        "test": ["pytest", "pytest-timeout", "freia", "h5py", "pillow", "matplotlib", "scikit-learn", "tensorboard"],
        # python -m zslfast.plot and --plots (t-SNE needs scikit-learn)
        "plots": ["matplotlib", "scikit-learn"],
        # --log tensorboard
        "tensorboard": ["tensorboard"],
    },
    entry_points={"console_scripts": ["zslfast=zslfast.__main__:main"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
