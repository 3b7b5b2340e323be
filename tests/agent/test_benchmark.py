"""The agent's benchmarks: NumPy on this CPU for real, and the PyTorch path's orchestration against a stand-in for
torch (CI has no GPU: which precisions are measured on which compute capability, what is reported as not
comparable, what a failing kernel becomes)."""

import types

import pytest

from agent import benchmark


def test_the_cpu_is_measured_with_numpy():
    figures = benchmark.benchmark_cpu(size=128, min_seconds=0.01, name="this CPU")

    (device,) = figures["devices"]
    assert figures["backend"].startswith("numpy ") and figures["backend"].endswith("(cpu)")
    assert set(device["tflops"]) == {"fp64", "fp32"} and all(v > 0 for v in device["tflops"].values())
    assert device["memory_bandwidth_gbps"] > 0
    assert set(device["errors"]) == {"tf32", "bf16", "fp16", "fp8", "int8"}


class FakeTensor:
    def __init__(self, torch, dtype=None):
        self.torch, self.dtype = torch, dtype

    def to(self, dtype):
        return FakeTensor(self.torch, dtype)

    def t(self):
        return self

    def contiguous(self):
        return self

    def copy_(self, other):
        self.torch.calls.append("copy")
        return self


def fake_torch(capability=(9, 0), failing=()):
    """Just enough of torch for the benchmark's control flow; `failing` kernels raise as a missing kernel does."""
    torch = types.SimpleNamespace(calls=[], __version__="2.11.0+cu130")
    torch.version = types.SimpleNamespace(cuda="13.0")
    torch.float64, torch.float32, torch.bfloat16, torch.float16 = "f64", "f32", "bf16", "f16"
    torch.float8_e4m3fn, torch.int8, torch.uint8 = "f8", "i8", "u8"
    torch.backends = types.SimpleNamespace(cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=False)))

    def kernel(name):
        def run(*args, **kwargs):
            if name in failing:
                raise RuntimeError(f"{name}: no kernel image is available for execution on the device\nmore")
            dtype = args[0].dtype if args and isinstance(args[0], FakeTensor) else None
            torch.calls.append((name, dtype, torch.backends.cuda.matmul.allow_tf32))
            return FakeTensor(torch)

        return run

    torch.matmul, torch._scaled_mm, torch._int_mm = kernel("matmul"), kernel("scaled_mm"), kernel("int_mm")
    torch.randn = lambda *size, device=None, dtype=None: FakeTensor(torch, dtype)
    torch.randint = lambda low, high, size, device=None, dtype=None: FakeTensor(torch, dtype)
    torch.empty = lambda size, dtype=None, device=None: FakeTensor(torch, dtype)
    torch.empty_like = lambda tensor: FakeTensor(torch, tensor.dtype)
    torch.tensor = lambda value, device=None: FakeTensor(torch)
    torch.device = lambda kind, index: (kind, index)
    torch.cuda = types.SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 2, get_device_capability=lambda device: capability,
        get_device_name=lambda device: "NVIDIA H100 80GB HBM3", synchronize=lambda device: None,
        empty_cache=lambda: None,
    )  # fmt: skip
    return torch


@pytest.fixture
def with_torch(monkeypatch):
    def install(torch):
        monkeypatch.setitem(__import__("sys").modules, "torch", torch)
        return torch

    return install


def test_every_precision_of_a_hopper_gpu_is_measured_each_on_its_own_kernel(with_torch):
    torch = with_torch(fake_torch(capability=(9, 0)))

    figures = benchmark.benchmark_gpus(size=64, min_seconds=0.0)

    assert figures["backend"] == "torch 2.11.0+cu130 (cuda 13.0)" and len(figures["devices"]) == 2
    device = figures["devices"][0]
    assert set(device["tflops"]) == set(benchmark.PRECISIONS) and device["errors"] == {}
    assert device["not_comparable"] == {"int8": benchmark.NOT_PEAK_INT8}
    matmuls = {(dtype, tf32) for name, dtype, tf32 in (c for c in torch.calls if c != "copy") if name == "matmul"}
    assert matmuls == {("f64", False), ("f32", False), ("f32", True), ("bf16", False), ("f16", False)}
    assert torch.backends.cuda.matmul.allow_tf32 is False  # left as it was found
    assert "copy" in torch.calls and device["memory_bandwidth_gbps"] > 0


def test_an_ampere_gpu_has_no_fp8_and_a_failing_kernel_is_reported_not_raised(with_torch):
    with_torch(fake_torch(capability=(8, 0), failing=("int_mm",)))

    (device, _second) = benchmark.benchmark_gpus(size=64, min_seconds=0.0)["devices"]

    assert "fp8" not in device["tflops"] and "compute capability 8.0" in device["errors"]["fp8"]
    assert device["errors"]["int8"] == "int_mm: no kernel image is available for execution on the device"
    assert device["not_comparable"] == {}


def test_a_node_with_gpus_but_no_torch_is_measured_on_its_cpu(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch fails

    figures = benchmark.benchmark_node(has_accelerators=True, size=64, min_seconds=0.01)

    assert figures["backend"].endswith("(cpu)")
