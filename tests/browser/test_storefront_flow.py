"""Buyers filter the storefront, open an offering and compare two; a provider publishes an offering buyers then see."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from tests.factories.accounts import PASSWORD, MembershipFactory
from tests.factories.marketplace import OfferingFactory, ProviderOrganizationFactory, SiteFactory, accelerator

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_filter_by_region_and_precision_open_and_compare(page, screenshot):
    # given
    east = SiteFactory(name="Shanghai Lingang", region="yangtze-delta")
    west = SiteFactory(name="Guiyang Gui'an", region="guizhou", residency_zone="cn-southwest")
    OfferingFactory(name="H100 Shanghai", site=east, on_demand_price=Decimal("18.5"))
    OfferingFactory(
        name="A100 Shanghai", site=east, accelerator=accelerator("nvidia-a100-80gb"), on_demand_price=Decimal("9.8")
    )
    OfferingFactory(
        name="Ascend Guiyang", site=west, accelerator=accelerator("huawei-ascend-910b"), on_demand_price=Decimal("7.5")
    )
    page.goto("/offerings/")
    expect(page.get_by_test_id("result-count")).to_have_text("3 offerings")
    # when: region, then a precision with a minimum, without a page reload (htmx), the URL keeping the filters
    page.get_by_label("Yangtze River Delta (长三角)").check()
    expect(page.get_by_test_id("result-count")).to_have_text("2 offerings")
    page.get_by_label("Precision", exact=True).select_option("fp8")
    page.get_by_label("Peak TFLOPS at that precision, at least").fill("1000")
    page.get_by_label("Peak TFLOPS at that precision, at least").press("Tab")
    # then
    expect(page.get_by_test_id("result-count")).to_have_text("1 offering")
    expect(page.get_by_test_id("offering-table")).to_contain_text("H100 Shanghai")
    assert "region=yangtze-delta" in page.url and "precision=fp8" in page.url and "min_tflops=1000" in page.url
    screenshot(page, "storefront-filtered")

    # a shared URL shows the same list
    page.goto(page.url)
    expect(page.get_by_test_id("result-count")).to_have_text("1 offering")

    # open the offering: specs, calculator, price history
    page.get_by_role("link", name="H100 Shanghai").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("H100 Shanghai")
    expect(page.get_by_test_id("price-estimate")).to_contain_text("¥3552.00")  # 8 × 24 h × ¥18.50
    page.get_by_label("Hours").fill("10")
    expect(page.get_by_test_id("price-estimate")).to_contain_text("¥1480.00")
    screenshot(page, "offering-detail")

    # compare two
    page.goto("/offerings/?region=yangtze-delta")
    page.get_by_label("Compare H100 Shanghai").check()
    page.get_by_label("Compare A100 Shanghai").check()
    page.get_by_test_id("compare-button").click()
    table = page.get_by_test_id("compare-table")
    expect(table).to_contain_text("H100 Shanghai")
    expect(table).to_contain_text("A100 Shanghai")
    screenshot(page, "compare")


def test_provider_publishes_an_offering_that_then_shows_in_the_storefront(page, screenshot):
    # given
    provider = ProviderOrganizationFactory(name="Lingang Compute")
    user = MembershipFactory(organization=provider).user
    SiteFactory(name="Lingang DC")
    page.goto("/accounts/login/")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # when
    page.goto("/console/")
    page.get_by_role("link", name="New offering").click()
    form = {
        "Name": "Fresh H20 cluster", "Description": "8× H20, RoCE", "Accelerators per node": "8",
        "vCPU per node": "96", "RAM per node (GB)": "1024", "Disk per node (GB)": "4000", "Network (Gb/s)": "200",
        "Capacity (nodes)": "5", "On-demand price per accelerator-hour": "7.20",
    }  # fmt: skip
    for label, value in form.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Site").select_option(label="Lingang DC")
    page.get_by_label("Accelerator model").select_option(label="NVIDIA H20 96GB")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("console-offerings")).to_contain_text("Fresh H20 cluster")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_test_id("published-count")).to_have_text("1")
    # then
    page.goto("/offerings/")
    expect(page.get_by_test_id("offering-table")).to_contain_text("Fresh H20 cluster")
    screenshot(page, "storefront-after-publish")
