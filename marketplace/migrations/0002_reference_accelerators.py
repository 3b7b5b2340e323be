"""Reference accelerators from vendors' public datasheets: dense peaks (no sparsity), TOPS for INT8.

Empty means the vendor publishes no figure for that precision (or the hardware lacks it).
"""

from django.db import migrations

# slug, vendor, name, memory GB, bandwidth GB/s, interconnect, domestic,
# fp64, fp32, tf32, bf16, fp16, fp8, int8, datasheet note
ACCELERATORS = [
    ("nvidia-h100-sxm", "NVIDIA", "H100 SXM 80GB", 80, 3350, "NVLink 4 · 900 GB/s", False,
     "67", "67", "494.7", "989.4", "989.4", "1978.9", "1978.9", "NVIDIA H100 Tensor Core GPU datasheet (SXM5); FP64 is the tensor-core figure"),
    ("nvidia-h800-sxm", "NVIDIA", "H800 SXM 80GB", 80, 3350, "NVLink · 400 GB/s", False,
     "1", "67", "494.7", "989.4", "989.4", "1978.9", "1978.9", "NVIDIA H800 SXM5 datasheet (China market)"),
    ("nvidia-h20", "NVIDIA", "H20 96GB", 96, 4000, "NVLink · 900 GB/s", False,
     "1", "44", "74", "148", "148", "296", "296", "NVIDIA HGX H20 datasheet (China market)"),
    ("nvidia-a100-80gb", "NVIDIA", "A100 SXM 80GB", 80, 2039, "NVLink 3 · 600 GB/s", False,
     "19.5", "19.5", "156", "312", "312", None, "624", "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB)"),
    ("nvidia-a800-80gb", "NVIDIA", "A800 SXM 80GB", 80, 2039, "NVLink · 400 GB/s", False,
     "19.5", "19.5", "156", "312", "312", None, "624", "NVIDIA A800 datasheet (China market, SXM4 80GB)"),
    ("nvidia-l40s", "NVIDIA", "L40S 48GB", 48, 864, "PCIe Gen4 x16 · 64 GB/s", False,
     None, "91.6", "183", "362.05", "362.05", "733", "733", "NVIDIA L40S datasheet"),
    ("nvidia-rtx-4090", "NVIDIA", "GeForce RTX 4090 24GB", 24, 1008, "PCIe Gen4 x16 · 64 GB/s", False,
     "1.29", "82.6", "82.6", "165.2", "165.2", "330.3", "660.6", "NVIDIA Ada Lovelace architecture whitepaper (FP32 accumulate)"),
    ("huawei-ascend-910b", "Huawei", "Ascend 910B 64GB", 64, 1600, "HCCS · 392 GB/s", True,
     None, None, None, "320", "320", None, "640", "Huawei Ascend 910 series public figures (Atlas 800T A2); varies by 910B SKU"),
    ("cambricon-mlu370-x8", "Cambricon", "MLU370-X8 48GB", 48, 614, "MLU-Link · 200 GB/s", True,
     None, "24", None, "96", "96", None, "256", "Cambricon MLU370-X8 product brief"),
    ("hygon-dcu-z100", "Hygon", "DCU Z100 32GB", 32, 1024, "PCIe Gen4 x16 · xGMI", True,
     "10.6", "10.6", None, None, "42.6", None, None, "Hygon DCU 深算一号 (Z100) public figures; FP16 matrix figure"),
    ("kunlunxin-r200", "Kunlunxin", "R200 32GB", 32, 512, "PCIe Gen4 x16", True,
     None, "32", None, None, "128", None, "256", "Kunlunxin 昆仑芯 R200 (2nd generation) product brief"),
]
PRECISIONS = ["fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8"]


def load(apps, schema_editor):
    accelerator_model = apps.get_model("marketplace", "AcceleratorModel")
    for slug, vendor, name, memory, bandwidth, interconnect, domestic, *peaks, note in ACCELERATORS:
        accelerator_model.objects.update_or_create(
            slug=slug,
            defaults={
                "vendor": vendor,
                "name": name,
                "memory_gb": memory,
                "memory_bandwidth_gbps": bandwidth,
                "interconnect": interconnect,
                "is_domestic": domestic,
                "datasheet_note": note,
                **{f"tflops_{p}": value for p, value in zip(PRECISIONS, peaks, strict=True)},
            },
        )


def unload(apps, schema_editor):
    apps.get_model("marketplace", "AcceleratorModel").objects.filter(slug__in=[row[0] for row in ACCELERATORS]).delete()


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0001_initial")]
    operations = [migrations.RunPython(load, unload)]
