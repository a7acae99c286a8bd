"""Timing and machine-measurement helpers shared by the benchmark scripts.

All timings are medians over many repeats after warm-up. When two implementations are compared,
their repeats are interleaved (a, b, a, b, ...) so that both see the same machine state, and the
ratio is taken from medians of the same run.
"""
import os
import platform
import statistics
import time

import torch


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _once(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def compare(fns, device, warmup=2, min_repeats=10, budget_s=3.0):
    """Median wall time in ms of each callable in ``fns``, repeats interleaved.

    Runs at least ``min_repeats`` rounds and more while the total stays within ``budget_s``.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples = [[] for _ in fns]
    start = time.perf_counter()
    rounds = 0
    while rounds < min_repeats or (time.perf_counter() - start < budget_s and rounds < 200):
        for i, fn in enumerate(fns):
            samples[i].append(_once(fn, device))
        rounds += 1
    return [1e3 * statistics.median(s) for s in samples]


def matmul_rate(device, n=2048, dtype=torch.float32):
    """Measured float32 GEMM rate in FLOP/s (n×n×n products, median of repeats)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    ms = compare([lambda: torch.mm(a, b, out=out)], device, min_repeats=10, budget_s=2.0)[0]
    return 2 * n ** 3 / (ms / 1e3)


def copy_bandwidth(device, mbytes=256):
    """Measured copy bandwidth in bytes/s (read + write counted), on buffers far larger than cache."""
    n = mbytes * 2 ** 20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = compare([lambda: dst.copy_(src)], device, min_repeats=10, budget_s=2.0)[0]
    return 2 * n * 4 / (ms / 1e3)


def machine_description(device):
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads ({os.cpu_count()} cores visible), torch {torch.__version__}"


def peak_memory_bytes(fn, device):
    """Extra peak memory (bytes) that running ``fn`` needs beyond what is allocated before it.

    CUDA: the caching allocator's peak statistics. CPU (Linux): the process's peak resident set
    (VmHWM), reset first through /proc/self/clear_refs, minus the resident set before the call.
    Returns None where neither is available.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return None

    try:
        # Return free heap pages to the OS first, or a new allocation may reuse resident memory and
        # never show up in the resident set.
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
    except OSError:
        return None
    before = status("VmRSS")
    fn()
    return status("VmHWM") - before
