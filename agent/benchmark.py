"""Benchmarks a node: dense matrix-product throughput per precision and memory bandwidth.

On NVIDIA GPUs with PyTorch installed, each device is measured at every precision it supports (fp64, fp32 with
TF32 off, tf32, bf16, fp16, fp8 through scaled matmul on compute capability 8.9 and newer, int8 through
`torch._int_mm`) with square products of `size`, timed with CUDA events; bandwidth is a device-to-device copy
(bytes read + bytes written over the time). Without PyTorch or a GPU, NumPy measures the CPU (fp64, fp32; NumPy
has no fast kernels for the other precisions, so they are reported as not measured, with the reason).

A product of two n×n matrices is 2n³ operations; the figure is the best of several timed repetitions after a
warm-up, so that clock ramp-up and one-off allocation are not counted.
"""

import time
from collections.abc import Callable

PRECISIONS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")
GPU_SIZE = 8192
CPU_SIZE = 2048
BANDWIDTH_BYTES_GPU = 2**30
BANDWIDTH_BYTES_CPU = 2**28
NOT_PEAK_INT8 = "torch._int_mm is a generic kernel, far from the fastest int8 path of the card"


class BenchmarkUnavailable(Exception):
    """No backend can measure this node (neither PyTorch with a GPU nor NumPy is installed)."""


def _best_seconds(run: Callable[[], None], *, min_seconds: float, max_repeats: int = 50) -> float:
    """The fastest of the repetitions of `run` (each returns when its work is done) after one warm-up."""
    run()
    best, spent, repeats = float("inf"), 0.0, 0
    while repeats < 3 or (spent < min_seconds and repeats < max_repeats):
        started = time.perf_counter()
        run()
        elapsed = time.perf_counter() - started
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
    return best


def _round(value: float) -> float:
    """Four significant digits: 1465.0 TFLOPS on a GPU, 0.1036 on a small CPU."""
    return float(f"{value:.4g}")


# --- CPU: NumPy ---


def benchmark_cpu(*, size: int = CPU_SIZE, min_seconds: float = 0.5, name: str = "CPU") -> dict:
    try:
        import numpy
    except ImportError:
        raise BenchmarkUnavailable("neither PyTorch with a CUDA device nor NumPy is installed") from None
    generator = numpy.random.default_rng(0)
    tflops, errors = {}, {}
    for precision, dtype in (("fp64", numpy.float64), ("fp32", numpy.float32)):
        a = generator.standard_normal((size, size)).astype(dtype)
        b = generator.standard_normal((size, size)).astype(dtype)
        seconds = _best_seconds(lambda a=a, b=b: numpy.matmul(a, b), min_seconds=min_seconds)
        tflops[precision] = _round(2 * size**3 / seconds / 1e12)
    for precision in PRECISIONS[2:]:
        errors[precision] = "not measured on a CPU: NumPy has no fast kernel for it"
    source = numpy.ones(BANDWIDTH_BYTES_CPU // 8)
    target = numpy.empty_like(source)
    seconds = _best_seconds(lambda: numpy.copyto(target, source), min_seconds=min_seconds)
    return {
        "backend": f"numpy {numpy.__version__} (cpu)",
        "devices": [
            {
                "index": None,
                "name": name,
                "tflops": tflops,
                "memory_bandwidth_gbps": _round(2 * source.nbytes / seconds / 1e9),
                "errors": errors,
            }
        ],
    }


# --- GPU: PyTorch ---


def _torch_device_figures(torch, index: int, *, size: int, min_seconds: float) -> dict:
    device = torch.device("cuda", index)
    capability = torch.cuda.get_device_capability(device)

    def timed(run) -> float:
        def synchronised():
            run()
            torch.cuda.synchronize(device)

        return _best_seconds(synchronised, min_seconds=min_seconds)

    def matmul_tflops(dtype, *, allow_tf32: bool = False) -> float:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        return 2 * size**3 / timed(lambda: torch.matmul(a, b)) / 1e12

    measures = {
        "fp64": lambda: matmul_tflops(torch.float64),
        "fp32": lambda: matmul_tflops(torch.float32),
        "tf32": lambda: matmul_tflops(torch.float32, allow_tf32=True),
        "bf16": lambda: matmul_tflops(torch.bfloat16),
        "fp16": lambda: matmul_tflops(torch.float16),
    }
    if capability >= (8, 9) and hasattr(torch, "float8_e4m3fn"):

        def fp8() -> float:
            a = torch.randn(size, size, device=device).to(torch.float8_e4m3fn)
            b = torch.randn(size, size, device=device).to(torch.float8_e4m3fn).t().contiguous().t()
            one = torch.tensor(1.0, device=device)
            run = lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)  # noqa: E731
            return 2 * size**3 / timed(run) / 1e12

        measures["fp8"] = fp8
    if hasattr(torch, "_int_mm"):

        def int8() -> float:
            a = torch.randint(-64, 64, (size, size), device=device, dtype=torch.int8)
            b = torch.randint(-64, 64, (size, size), device=device, dtype=torch.int8)
            return 2 * size**3 / timed(lambda: torch._int_mm(a, b)) / 1e12

        measures["int8"] = int8
    tflops, errors = {}, {}
    for precision in PRECISIONS:
        measure = measures.get(precision)
        if measure is None:
            errors[precision] = f"not supported by compute capability {capability[0]}.{capability[1]} in this PyTorch"
            continue
        try:
            tflops[precision] = _round(measure())
        except (RuntimeError, TypeError) as error:  # a kernel this build or device lacks
            errors[precision] = str(error).splitlines()[0][:200]
        finally:
            torch.cuda.empty_cache()
    torch.backends.cuda.matmul.allow_tf32 = False
    seconds = _copy_seconds(torch, device, timed)
    torch.cuda.empty_cache()
    return {
        "index": index,
        "name": torch.cuda.get_device_name(device),
        "tflops": tflops,
        "memory_bandwidth_gbps": _round(2 * BANDWIDTH_BYTES_GPU / seconds / 1e9),
        "errors": errors,
        # Measured and shown, but not a fair test of the card: the platform does not hold a node for it.
        "not_comparable": {"int8": NOT_PEAK_INT8} if "int8" in tflops else {},
    }


def _copy_seconds(torch, device, timed) -> float:
    """The best time of a device-to-device copy of BANDWIDTH_BYTES_GPU (freed on return)."""
    source = torch.empty(BANDWIDTH_BYTES_GPU, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    return timed(lambda: target.copy_(source))


def benchmark_gpus(*, size: int = GPU_SIZE, min_seconds: float = 0.5, indices: list[int] | None = None) -> dict | None:
    """Every CUDA device's figures, or None when PyTorch or a CUDA device is missing."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    indices = list(range(torch.cuda.device_count())) if indices is None else indices
    return {
        "backend": f"torch {torch.__version__} (cuda {torch.version.cuda})",
        "devices": [_torch_device_figures(torch, index, size=size, min_seconds=min_seconds) for index in indices],
    }


def benchmark_node(
    *, has_accelerators: bool, size: int | None = None, min_seconds: float = 0.5, cpu_name: str = "CPU"
) -> dict:
    """The node's figures: its GPUs when it has them and PyTorch can drive them, else its CPU."""
    if has_accelerators:
        figures = benchmark_gpus(size=size or GPU_SIZE, min_seconds=min_seconds)
        if figures is not None:
            return figures
    return benchmark_cpu(size=size or CPU_SIZE, min_seconds=min_seconds, name=cpu_name)
