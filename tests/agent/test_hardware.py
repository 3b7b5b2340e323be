"""The agent's hardware detection on real nvidia-smi and NVML readings of an H100 and an H200 (fixtures/, copied
from the shared fixtures), and on hand-made cases: several GPUs, MIG on, a missing field, garbage."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent import hardware
from agent.hardware import Accelerator, DetectionError

FIXTURES = Path(__file__).parent / "fixtures"
H100, H200 = FIXTURES / "h100-80gb-hbm3", FIXTURES / "h200-141gb-hbm3e"
HEADER = (
    "index, uuid, name, memory.total [MiB], driver_version, power.limit [W], compute_cap\n"  # QUERY_FIELDS, with units
)


def test_the_real_h100_query_csv_is_read_field_by_field():
    (accelerator,) = hardware.parse_query_csv((H100 / "nvidia-smi-query.csv").read_text())

    assert accelerator == Accelerator(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-00000000-1111-2222-3333-444444444444",
        memory_mib=81559,
        driver_version="580.159.04",
        compute_capability="9.0",
        power_limit_w=700.0,
    )


def test_the_real_h200_query_csv_is_read():
    (accelerator,) = hardware.parse_query_csv((H200 / "nvidia-smi-query.csv").read_text())

    assert (accelerator.name, accelerator.memory_mib, accelerator.compute_capability) == ("NVIDIA H200", 143771, "9.0")


def test_the_real_xml_gives_the_cuda_version_and_mig_mode_per_uuid():
    cuda, mig = hardware.parse_smi_xml((H100 / "nvidia-smi-q.xml").read_text())

    assert cuda == "13.0"
    assert mig == {"GPU-00000000-1111-2222-3333-444444444444": False}


def test_the_real_busy_readings_are_a_heartbeats_telemetry():
    (reading,) = hardware.parse_telemetry_csv((H200 / "nvidia-smi-busy.csv").read_text())

    assert reading == {
        "index": 0,
        "utilization_percent": 0.0,
        "memory_utilization_percent": 0.0,
        "memory_used_mib": 6353.0,
        "memory_total_mib": 143771.0,
        "temperature_c": 47.0,
        "power_draw_w": 303.0,
    }


def test_several_gpus_in_any_column_order_and_a_missing_field():
    text = (
        "name, index, compute_cap, memory.total [MiB], uuid, driver_version, power.limit [W]\n"
        "NVIDIA A100-SXM4-80GB, 0, 8.0, 81920 MiB, GPU-a, 550.54.15, 400.00 W\n"
        "NVIDIA A100-SXM4-80GB, 1, 8.0, 81920 MiB, GPU-b, 550.54.15, [N/A]\n"
    )

    first, second = hardware.parse_query_csv(text)

    assert (first.index, first.uuid, first.power_limit_w) == (0, "GPU-a", 400.0)
    assert (second.index, second.uuid, second.power_limit_w) == (1, "GPU-b", None)  # not reported: left empty


def test_mig_on_is_read_per_gpu():
    xml = """<nvidia_smi_log><cuda_version>12.4</cuda_version>
      <gpu id="0"><uuid>GPU-a</uuid><mig_mode><current_mig>Enabled</current_mig></mig_mode></gpu>
      <gpu id="1"><uuid>GPU-b</uuid><mig_mode><current_mig>Disabled</current_mig></mig_mode></gpu>
      <gpu id="2"><uuid>GPU-c</uuid><mig_mode><current_mig>N/A</current_mig></mig_mode></gpu></nvidia_smi_log>"""

    assert hardware.parse_smi_xml(xml) == ("12.4", {"GPU-a": True, "GPU-b": False, "GPU-c": False})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Failed to initialize NVML: Driver/library version mismatch\n", "no CSV header"),
        (HEADER + "0, GPU-a, NVIDIA H100, lots, 580, 700 W, 9.0\n", "unreadable number"),
        (HEADER + "0, GPU-a, NVIDIA H100\n", "3 fields, the header 7"),
        (HEADER + "0, GPU-a, , 81559 MiB, 580, 700 W, 9.0\n", "without an index or a name"),
    ],
)
def test_garbage_is_a_clear_detection_error(text, message):
    with pytest.raises(DetectionError, match=message):
        hardware.parse_query_csv(text)


def test_unreadable_xml_is_a_clear_detection_error():
    with pytest.raises(DetectionError, match="no readable XML"):
        hardware.parse_smi_xml("<nvidia_smi_log><gpu>")


def test_detection_never_raises_a_failing_nvidia_smi_is_reported(monkeypatch):
    monkeypatch.setattr(hardware, "_detect_with_nvml", lambda: None)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    failed = SimpleNamespace(returncode=9, stdout="", stderr="NVIDIA-SMI has failed because it couldn't communicate")
    monkeypatch.setattr(hardware.subprocess, "run", lambda *args, **kwargs: failed)

    detection = hardware.detect_accelerators()

    assert (detection.source, detection.accelerators) == ("error", [])
    assert detection.error == "nvidia-smi exited 9: NVIDIA-SMI has failed because it couldn't communicate"


def test_no_nvidia_tools_is_a_cpu_only_node(monkeypatch):
    monkeypatch.setattr(hardware, "_detect_with_nvml", lambda: None)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)

    assert hardware.detect_accelerators().as_payload() == {"accelerators": [], "source": "none", "error": ""}


def test_nvidia_smi_detection_joins_the_csv_and_the_xml(monkeypatch):
    outputs = {
        "--format=csv": (H100 / "nvidia-smi-query.csv").read_text(),
        "-x": (H100 / "nvidia-smi-q.xml").read_text(),
    }
    monkeypatch.setattr(hardware, "_detect_with_nvml", lambda: None)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(
        hardware.subprocess,
        "run",
        lambda argv, **kwargs: SimpleNamespace(returncode=0, stdout=outputs[argv[-1]], stderr=""),
    )

    detection = hardware.detect_accelerators()

    assert detection.source == "nvidia-smi"
    assert [(a.name, a.cuda_version, a.mig_enabled) for a in detection.accelerators] == [
        ("NVIDIA H100 80GB HBM3", "13.0", False)
    ]


class FakeNvml:
    """NVML as nvidia-ml-py exposes it, answering with the H100 probe's readings (gpu-probe.json)."""

    class NVMLError(Exception):
        pass

    def __init__(self, probe: dict, *, mig_supported: bool = True):
        self.probe, self.mig_supported = probe["nvml"], mig_supported

    def nvmlSystemGetDriverVersion(self):
        return self.probe["driver"]

    def nvmlSystemGetCudaDriverVersion(self):
        return self.probe["cuda_driver"]

    def nvmlDeviceGetCount(self):
        return self.probe["count"]

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return self.probe["name"].encode()  # older nvidia-ml-py answers bytes

    def nvmlDeviceGetUUID(self, handle):
        return self.probe["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=self.probe["memory_total_bytes"])

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return tuple(self.probe["compute_capability"])

    def nvmlDeviceGetPowerManagementLimit(self, handle):
        return self.probe["power_limit_mw"]

    def nvmlDeviceGetMigMode(self, handle):
        if not self.mig_supported:
            raise self.NVMLError("Not Supported")
        return (0, 0)


@pytest.mark.parametrize("mig_supported", [True, False])
def test_nvml_readings_of_the_real_h100(mig_supported):
    probe = json.loads((H100 / "gpu-probe.json").read_text())

    (accelerator,) = hardware.accelerators_from_nvml(FakeNvml(probe, mig_supported=mig_supported))

    assert accelerator == Accelerator(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-00000000-1111-2222-3333-444444444444",
        memory_mib=81559,  # 85520809984 bytes, as nvidia-smi's MiB
        driver_version="580.159.04",
        cuda_version="13.0",
        compute_capability="9.0",
        power_limit_w=700.0,
        mig_enabled=False,
    )
