import re

from django.db import models
from django.utils.translation import gettext_lazy as _

from marketplace.core.models import TimeStampedModel


class Precision(models.TextChoices):
    FP64 = "fp64", "FP64"
    FP32 = "fp32", "FP32"
    TF32 = "tf32", "TF32"
    BF16 = "bf16", "BF16"
    FP16 = "fp16", "FP16"
    FP8 = "fp8", "FP8"
    INT8 = "int8", "INT8"


class AcceleratorKind(models.TextChoices):
    GPU = "gpu", _("GPU")
    NPU = "npu", _("NPU / AI accelerator")
    CPU = "cpu", _("CPU only")


def _peak_field(verbose_name):
    return models.DecimalField(verbose_name, max_digits=8, decimal_places=2, null=True, blank=True)


class AcceleratorModel(TimeStampedModel):
    """An accelerator as its vendor's datasheet describes it. Peaks are dense (no sparsity); empty = unsupported."""

    vendor = models.CharField(_("vendor"), max_length=60, db_index=True)
    name = models.CharField(_("name"), max_length=80)
    kind = models.CharField(_("kind"), max_length=8, choices=AcceleratorKind.choices, default=AcceleratorKind.GPU)
    # How the provider agent recognises it: a regular expression matched (case-insensitive) against the name NVML or
    # nvidia-smi reports, e.g. "NVIDIA H100 80GB HBM3". Empty: the agent cannot detect it (not an NVIDIA device).
    detection_pattern = models.CharField(_("detection pattern"), max_length=200, blank=True)
    slug = models.SlugField(_("slug"), max_length=80, unique=True)
    memory_gb = models.PositiveIntegerField(_("memory (GB)"))
    memory_bandwidth_gbps = models.PositiveIntegerField(_("memory bandwidth (GB/s)"))
    interconnect = models.CharField(_("interconnect"), max_length=120, blank=True)
    is_domestic = models.BooleanField(_("domestic (信创)"), default=False, db_index=True)
    # Whole lazy strings: formatting a lazy string would freeze it in the language active at import.
    tflops_fp64 = _peak_field(_("peak dense FP64 (TFLOPS)"))
    tflops_fp32 = _peak_field(_("peak dense FP32 (TFLOPS)"))
    tflops_tf32 = _peak_field(_("peak dense TF32 (TFLOPS)"))
    tflops_bf16 = _peak_field(_("peak dense BF16 (TFLOPS)"))
    tflops_fp16 = _peak_field(_("peak dense FP16 (TFLOPS)"))
    tflops_fp8 = _peak_field(_("peak dense FP8 (TFLOPS)"))
    tflops_int8 = _peak_field(_("peak dense INT8 (TOPS)"))
    datasheet_note = models.CharField(_("datasheet"), max_length=240, blank=True)

    class Meta:
        verbose_name = _("accelerator model")
        verbose_name_plural = _("accelerator models")
        ordering = ["vendor", "name"]

    def __str__(self) -> str:
        return f"{self.vendor} {self.name}"

    def peak_tflops(self, precision: str):
        return getattr(self, f"tflops_{precision}")

    def detects(self, reported_name: str) -> bool:
        return (
            bool(self.detection_pattern) and re.search(self.detection_pattern, reported_name, re.IGNORECASE) is not None
        )
