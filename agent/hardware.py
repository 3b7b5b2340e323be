"""What a node is: its host facts and its NVIDIA accelerators, through NVML (nvidia-ml-py) or nvidia-smi.

Detection never raises past `detect_accelerators`: a node whose tools answer with something unreadable registers
with the error, and the platform holds it for review, instead of the agent failing and restarting in a loop.
"""

import csv
import io
import os
import platform
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field

NVIDIA_SMI_TIMEOUT_SECONDS = 20
QUERY_FIELDS = "index,uuid,name,memory.total,driver_version,power.limit,compute_cap"
TELEMETRY_FIELDS = "index,utilization.gpu,utilization.memory,memory.used,memory.total,temperature.gpu,power.draw"
MISSING = {"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]"}


class DetectionError(Exception):
    """The node's tools answered, but not with anything this agent can read."""


@dataclass
class Accelerator:
    index: int
    name: str
    uuid: str = ""
    memory_mib: int | None = None
    driver_version: str = ""
    cuda_version: str = ""
    compute_capability: str = ""
    power_limit_w: float | None = None
    mig_enabled: bool = False


@dataclass
class Detection:
    accelerators: list[Accelerator] = field(default_factory=list)
    source: str = "none"  # nvml, nvidia-smi, or none (no NVIDIA tools: a CPU-only node)
    error: str = ""

    def as_payload(self) -> dict:
        return {"accelerators": [asdict(a) for a in self.accelerators], "source": self.source, "error": self.error}


# --- nvidia-smi ---


def _value(raw: str | None) -> str:
    value = (raw or "").strip()
    return "" if value.lower() in MISSING else value


def _number(raw: str | None, unit: str = "") -> float | None:
    """'81559 MiB' → 81559.0; a missing reading ('N/A', '[Not Supported]') → None."""
    value = _value(raw)
    if unit and value.lower().endswith(unit.lower()):
        value = value[: -len(unit)].strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise DetectionError(f"unreadable number {raw!r}") from None


def _csv_rows(text: str) -> list[dict[str, str]]:
    """Rows of `nvidia-smi --query-…=… --format=csv`, keyed by the field name without its unit: the header says
    which column is which, so the order of the fields does not matter."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    reader = csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True)
    header = [name.split(" [")[0].strip().lower() for name in next(reader)]
    if "index" not in header:
        raise DetectionError(f"nvidia-smi printed no CSV header with an index column: {lines[0][:120]!r}")
    rows = []
    for number, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise DetectionError(f"nvidia-smi CSV line {number} has {len(row)} fields, the header {len(header)}")
        rows.append(dict(zip(header, (cell.strip() for cell in row), strict=True)))
    return rows


def parse_query_csv(text: str) -> list[Accelerator]:
    """Accelerators from `nvidia-smi --query-gpu=QUERY_FIELDS --format=csv`."""
    accelerators = []
    for row in _csv_rows(text):
        index = _number(row.get("index"))
        name = _value(row.get("name"))
        if index is None or not name:
            raise DetectionError("nvidia-smi listed a GPU without an index or a name")
        memory = _number(row.get("memory.total"), "MiB")
        accelerators.append(
            Accelerator(
                index=int(index),
                name=name,
                uuid=_value(row.get("uuid")),
                memory_mib=int(memory) if memory is not None else None,
                driver_version=_value(row.get("driver_version")),
                compute_capability=_value(row.get("compute_cap")),
                power_limit_w=_number(row.get("power.limit"), "W"),
            )
        )
    return accelerators


def parse_smi_xml(text: str) -> tuple[str, dict[str, bool]]:
    """(CUDA version, MIG on per GPU UUID) from `nvidia-smi -q -x`."""
    try:
        root = ElementTree.fromstring(text)  # noqa: S314 — the node's own nvidia-smi, not a remote document
    except ElementTree.ParseError as error:
        raise DetectionError(f"nvidia-smi -q -x printed no readable XML ({error})") from None
    cuda_version = _value(root.findtext("cuda_version"))
    mig = {}
    for gpu in root.iter("gpu"):
        uuid = _value(gpu.findtext("uuid"))
        mig[uuid] = _value(gpu.findtext("mig_mode/current_mig")).lower() == "enabled"
    return cuda_version, mig


def parse_telemetry_csv(text: str) -> list[dict]:
    """Per-GPU readings from `nvidia-smi --query-gpu=TELEMETRY_FIELDS --format=csv` (a heartbeat's view)."""
    readings = []
    for row in _csv_rows(text):
        readings.append(
            {
                "index": int(_number(row.get("index")) or 0),
                "utilization_percent": _number(row.get("utilization.gpu"), "%"),
                "memory_utilization_percent": _number(row.get("utilization.memory"), "%"),
                "memory_used_mib": _number(row.get("memory.used"), "MiB"),
                "memory_total_mib": _number(row.get("memory.total"), "MiB"),
                "temperature_c": _number(row.get("temperature.gpu")),
                "power_draw_w": _number(row.get("power.draw"), "W"),
            }
        )
    return readings


def _nvidia_smi(*args: str) -> str | None:
    """nvidia-smi's output; None when it is not installed. A failing run raises DetectionError."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 — a fixed executable and fixed arguments
            [executable, *args], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DetectionError(f"nvidia-smi did not run: {error}") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise DetectionError(f"nvidia-smi exited {done.returncode}: {message[0] if message else 'no output'}")
    return done.stdout


def _detect_with_smi() -> Detection | None:
    text = _nvidia_smi(f"--query-gpu={QUERY_FIELDS}", "--format=csv")
    if text is None:
        return None
    accelerators = parse_query_csv(text)
    cuda_version, mig = parse_smi_xml(_nvidia_smi("-q", "-x") or "")
    for accelerator in accelerators:
        accelerator.cuda_version = cuda_version
        accelerator.mig_enabled = mig.get(accelerator.uuid, False)
    return Detection(accelerators=accelerators, source="nvidia-smi")


# --- NVML ---


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def accelerators_from_nvml(nvml) -> list[Accelerator]:
    """Accelerators through an initialised NVML module (`pynvml` of nvidia-ml-py, or a stand-in in tests). A
    reading the device does not support is left empty, as nvidia-smi leaves it 'N/A'."""

    def read(function, *args):
        try:
            return function(*args)
        except nvml.NVMLError:
            return None

    driver = _text(read(nvml.nvmlSystemGetDriverVersion) or "")
    cuda = read(nvml.nvmlSystemGetCudaDriverVersion)
    cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
    accelerators = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = read(nvml.nvmlDeviceGetMemoryInfo, handle)
        capability = read(nvml.nvmlDeviceGetCudaComputeCapability, handle)
        power_mw = read(nvml.nvmlDeviceGetPowerManagementLimit, handle)
        mig = read(nvml.nvmlDeviceGetMigMode, handle)
        accelerators.append(
            Accelerator(
                index=index,
                name=_text(nvml.nvmlDeviceGetName(handle)),
                uuid=_text(read(nvml.nvmlDeviceGetUUID, handle) or ""),
                memory_mib=memory.total // 2**20 if memory is not None else None,
                driver_version=driver,
                cuda_version=cuda_version,
                compute_capability=f"{capability[0]}.{capability[1]}" if capability else "",
                power_limit_w=power_mw / 1000 if power_mw else None,
                mig_enabled=bool(mig and mig[0]),
            )
        )
    return accelerators


def _detect_with_nvml() -> Detection | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None  # no driver here: nvidia-smi will say the same, or the node has no NVIDIA GPU
    try:
        return Detection(accelerators=accelerators_from_nvml(pynvml), source="nvml")
    except pynvml.NVMLError as error:
        raise DetectionError(f"NVML failed: {error}") from None
    finally:
        pynvml.nvmlShutdown()


def detect_accelerators() -> Detection:
    """NVML when nvidia-ml-py and a driver are there, else nvidia-smi, else none (CPU-only). Never raises."""
    try:
        return _detect_with_nvml() or _detect_with_smi() or Detection()
    except DetectionError as error:
        return Detection(source="error", error=str(error))


# --- The host ---


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _sep, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 2)
    except (ValueError, OSError, AttributeError):
        return None


def host_facts(work_dir: str) -> dict:
    """What registration reports besides the accelerators."""
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "disk_gb": round(shutil.disk_usage(work_dir).total / 1e9, 2),
        "os": platform.platform(),
    }


def telemetry(detection: Detection) -> dict:
    """A heartbeat's readings: the host's load and memory, and each GPU's utilisation, memory and temperature."""
    readings: dict = {"load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else []}
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            values = {line.split(":")[0]: line.split()[1] for line in meminfo if ":" in line}
        readings["memory_used_percent"] = round(100 * (1 - int(values["MemAvailable"]) / int(values["MemTotal"])), 1)
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        pass
    if detection.accelerators:
        try:
            text = _nvidia_smi(f"--query-gpu={TELEMETRY_FIELDS}", "--format=csv")
            readings["accelerators"] = parse_telemetry_csv(text) if text else []
        except DetectionError as error:
            readings["accelerators_error"] = str(error)
    return readings
