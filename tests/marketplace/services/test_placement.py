from decimal import Decimal

import pytest

from marketplace.models import AcceleratorModel
from marketplace.selectors.catalogue import offering_list
from marketplace.services.placement import PlacementRequest, placement_quote, training_estimate
from tests.factories.marketplace import OfferingFactory, SiteFactory, accelerator


@pytest.fixture
def offerings(db):
    east = SiteFactory(region="yangtze-delta", residency_zone="cn-east")
    west = SiteFactory(region="guizhou", residency_zone="cn-southwest")
    return {
        "h100_east": OfferingFactory(site=east, on_demand_price=Decimal("18.5"), interruptible_price=Decimal("9.0")),
        "h100_west": OfferingFactory(site=west, on_demand_price=Decimal("15.0")),
        "ascend_west": OfferingFactory(
            site=west, accelerator=accelerator("huawei-ascend-910b"), on_demand_price=Decimal("9.0")
        ),
        "busy_east": OfferingFactory(site=east, on_demand_price=Decimal("1.0"), capacity_nodes=1, rented_nodes=1),
    }


def quote(**kwargs):
    return placement_quote(request=PlacementRequest(**kwargs), offerings=offering_list())


def test_quotes_rank_by_total_price_and_say_why_others_are_out(offerings):
    result = quote(accelerators=16, hours=10)
    assert [q.offering for q in result.quotes] == [
        offerings["ascend_west"],
        offerings["h100_west"],
        offerings["h100_east"],
    ]
    first = result.quotes[0]
    assert (first.nodes, first.accelerators) == (2, 16)
    assert first.total_price == Decimal("9.0") * 16 * 10
    assert dict((o.pk, reason) for o, reason in result.excluded) == {offerings["busy_east"].pk: "no_capacity"}


def test_partial_nodes_are_paid_in_full(offerings):
    result = quote(accelerators=3, hours=1, accelerator_slug="nvidia-h100-sxm", residency_zone="cn-southwest")
    assert [(q.nodes, q.accelerators, q.total_price) for q in result.quotes] == [(1, 8, Decimal("120.0"))]


def test_residency_zone_never_returns_another_zone(offerings):
    result = quote(accelerators=8, hours=1, residency_zone="cn-east")
    assert {q.offering.site.residency_zone for q in result.quotes} == {"cn-east"}
    reasons = dict((o.pk, r) for o, r in result.excluded)
    assert reasons[offerings["h100_west"].pk] == reasons[offerings["ascend_west"].pk] == "wrong_zone"


def test_domestic_only_excludes_foreign_accelerators(offerings):
    result = quote(accelerators=8, hours=1, domestic_only=True)
    assert [q.offering for q in result.quotes] == [offerings["ascend_west"]]
    assert {r for _o, r in result.excluded} == {"not_domestic"}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"precision": "fp8", "min_tflops": Decimal("1000")}, "too_slow"),
        ({"max_price_per_accelerator_hour": Decimal("10")}, "too_expensive"),
        ({"region": "yangtze-delta"}, "wrong_region"),
    ],
)
def test_exclusion_reasons(offerings, kwargs, reason):
    result = quote(accelerators=8, hours=1, **kwargs)
    assert reason in {r for _o, r in result.excluded}


def test_interruptible_price_is_used_when_allowed(offerings):
    result = quote(accelerators=8, hours=2, residency_zone="cn-east", interruptible_allowed=True)
    assert [(q.mode, q.total_price) for q in result.quotes] == [("interruptible", Decimal("9.0") * 8 * 2)]


def test_gpt3_training_compute_matches_the_published_figure(db):
    # GPT-3 175B on 300B tokens: 3.14e23 FLOPs ≈ 3640 PF-days (Brown et al. 2020, table D.1)
    estimate = training_estimate(
        parameters=175_000_000_000, tokens=300_000_000_000, precision="bf16", mfu=Decimal("0.5"),
        accelerators=list(AcceleratorModel.objects.all()),
    )  # fmt: skip
    assert estimate.total_flops == 315 * 10**21
    assert abs(estimate.petaflop_days - Decimal("3640")) / Decimal("3640") < Decimal("0.01")
    # on H100 bf16 dense 989.4 TFLOPS at 50 % MFU: 3.15e23 / 494.7e12 / 3600 ≈ 176,874.9 accelerator-hours
    assert estimate.accelerator_hours["nvidia-h100-sxm"] == Decimal("176874.9")
    assert "hygon-dcu-z100" not in estimate.accelerator_hours  # no published BF16 figure


def test_exclusions_are_counted_per_reason_with_a_few_examples(offerings):
    for _ in range(7):
        OfferingFactory(site=SiteFactory(residency_zone="cn-south"))
    result = quote(accelerators=8, hours=1, residency_zone="cn-east")
    assert result.excluded_counts == {"wrong_zone": 9, "no_capacity": 1}
    assert len([o for o, reason in result.excluded if reason == "wrong_zone"]) == 5


def test_only_the_cheapest_quotes_are_returned(offerings):
    result = placement_quote(request=PlacementRequest(accelerators=8, hours=1), offerings=offering_list(), limit=2)
    assert [q.offering for q in result.quotes] == [offerings["ascend_west"], offerings["h100_west"]]
