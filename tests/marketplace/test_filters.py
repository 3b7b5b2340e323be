"""Storefront facets and sorting: one FilterSet for pages and API."""

from decimal import Decimal

import pytest

from marketplace.models import Offering
from marketplace.selectors.catalogue import offering_list
from tests.factories.marketplace import OfferingFactory, SiteFactory, accelerator


@pytest.fixture
def catalogue(db):
    east = SiteFactory(name="Shanghai Lingang", region="yangtze-delta", tier="central", residency_zone="cn-east")
    west = SiteFactory(name="Guiyang Gui'an", region="guizhou", tier="regional", residency_zone="cn-southwest")
    edge = SiteFactory(name="Shenzhen Edge", region="greater-bay", tier="edge", residency_zone="cn-south")
    return {
        "h100": OfferingFactory(name="H100 east", site=east, on_demand_price=Decimal("18.5")),
        "910b": OfferingFactory(
            name="Ascend west", site=west, accelerator=accelerator("huawei-ascend-910b"), on_demand_price=Decimal("9.0")
        ),
        "4090": OfferingFactory(
            name="4090 edge",
            site=edge,
            accelerator=accelerator("nvidia-rtx-4090"),
            accelerators_per_node=4,
            on_demand_price=Decimal("2.2"),
            capacity_nodes=2,
            rented_nodes=2,
        ),
        "draft": OfferingFactory(
            name="H100 draft", site=east, status=Offering.Status.DRAFT, on_demand_price=Decimal("1")
        ),
    }


def names(filters) -> list[str]:
    return list(offering_list(filters=filters).values_list("name", flat=True))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["4090 edge", "Ascend west", "H100 east"]),
        ({"vendor": ["Huawei"]}, ["Ascend west"]),
        ({"accelerator": ["nvidia-h100-sxm", "nvidia-rtx-4090"]}, ["4090 edge", "H100 east"]),
        ({"min_accelerators_per_node": "8"}, ["Ascend west", "H100 east"]),
        ({"min_memory_gb": "64"}, ["Ascend west", "H100 east"]),
        ({"precision": "fp8", "min_tflops": "1000"}, ["H100 east"]),
        ({"precision": "bf16", "min_tflops": "300"}, ["Ascend west", "H100 east"]),
        ({"region": ["guizhou", "greater-bay"]}, ["4090 edge", "Ascend west"]),
        ({"tier": ["edge"]}, ["4090 edge"]),
        ({"zone": ["cn-east"]}, ["H100 east"]),
        ({"domestic": "true"}, ["Ascend west"]),
        ({"min_price": "5", "max_price": "10"}, ["Ascend west"]),
        ({"available": "true"}, ["Ascend west", "H100 east"]),
        ({"q": "guiyang"}, ["Ascend west"]),
        ({"q": "nvidia east"}, ["H100 east"]),
    ],
)
def test_facets_narrow_published_offerings(catalogue, filters, expected):
    assert names(filters) == expected


@pytest.mark.parametrize(
    ("sort", "precision", "expected"),
    [
        ("price", "bf16", ["4090 edge", "Ascend west", "H100 east"]),
        ("-price", "bf16", ["H100 east", "Ascend west", "4090 edge"]),
        ("-memory", "bf16", ["H100 east", "Ascend west", "4090 edge"]),
        # 4090: 2.2/165.2 = 0.0133; 910B: 9/320 = 0.0281; H100: 18.5/989.4 = 0.0187
        ("price_per_tflops", "bf16", ["4090 edge", "H100 east", "Ascend west"]),
        # FP64: H100 18.5/67 = 0.28 beats the 4090's 2.2/1.29 = 1.7; the Ascend has none and sorts last
        ("price_per_tflops", "fp64", ["H100 east", "4090 edge", "Ascend west"]),
    ],
)
def test_sorting(catalogue, sort, precision, expected):
    assert names({"sort": sort, "precision": precision}) == expected
