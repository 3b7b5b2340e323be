"""A buyer rents from the storefront, watches the rental run and bill, sees the balance fall, stops it."""

import json
import time
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from billing.selectors import wallet_get
from marketplace.models import Rental
from marketplace.tasks import rental_settle_batch_task, rentals_provision_due_task
from tests.factories.accounts import PASSWORD, MembershipFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PRICE = Decimal("360.00")  # ¥0.10 a second: every second of the test shows in the figures


def chart_points(page) -> int:
    return len(json.loads(page.locator("#rental-chart-data").text_content())["labels"])


def charged(page) -> Decimal:
    return Decimal(page.get_by_test_id("rental-charged").text_content().lstrip("¥"))


def test_rent_watch_it_bill_and_stop(page, screenshot, monkeypatch):
    # given: a funded buyer, an offering of one-accelerator nodes; the detail page polls every second
    monkeypatch.setattr("marketplace.views.rentals.POLL_SECONDS", 1)
    membership = MembershipFactory(organization__name="Lab 实验室")
    fund(membership.organization, "1000.00")
    offering = OfferingFactory(
        name="H100 Lingang", accelerators_per_node=1, capacity_nodes=2, on_demand_price=PRICE, interruptible_price=None
    )
    page.goto("/accounts/login/")
    page.get_by_label("E-mail").fill(membership.user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    # when: rent one accelerator on demand from the offering page
    page.goto(f"/offerings/{offering.pk}/")
    form = page.get_by_test_id("rent-form")
    form.get_by_label("Accelerators").fill("1")
    form.get_by_label("Hours").fill("")
    page.get_by_test_id("rent").click()

    # then: the rental page; the worker provisions it and the page follows without a reload
    expect(page.get_by_role("alert")).to_contain_text("ordered")
    rental = Rental.objects.get(organization=membership.organization)
    assert page.url.endswith(f"/rentals/{rental.pk}/")
    expect(page.get_by_test_id("rental-status")).to_have_text("Pending")
    rentals_provision_due_task.apply()  # what the admission asked the worker for
    expect(page.get_by_test_id("rental-status")).to_have_text("Running")
    expect(page.get_by_test_id("timeline")).to_contain_text("Nodes ready")  # the worker's reason, in my language
    expect(page.get_by_test_id("stop")).to_be_visible()
    assert page.get_by_test_id("rental-charged").text_content() == "¥0.00"

    # the metering task runs (as the beat would): the charge and the chart move on the open page
    time.sleep(1.2)
    rental_settle_batch_task.apply(args=[[rental.pk]])
    expect(page.get_by_test_id("rental-charged")).not_to_have_text("¥0.00")
    first_charge, first_points = charged(page), chart_points(page)
    time.sleep(1.2)
    rental_settle_batch_task.apply(args=[[rental.pk]])
    expect(page.get_by_test_id("rental-charged")).not_to_have_text(f"¥{first_charge:.2f}")
    assert charged(page) > first_charge and chart_points(page) > first_points
    screenshot(page, "rental-running")

    # the wallet: the hold and the charges have come off the available balance
    page.get_by_role("link", name="Wallet", exact=True).first.click()
    available = Decimal(page.get_by_test_id("balance-available").text_content())
    assert available < Decimal("1000.00") - PRICE  # an hour's runway held, and charges taken
    expect(page.get_by_test_id("balance-held")).to_have_text("360.00")

    # stop it: the final charge, the hold released, the wallet down by exactly the charge
    page.goto(f"/rentals/{rental.pk}/")
    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("rental-status")).to_have_text("Completed")
    rental.refresh_from_db()
    expect(page.get_by_test_id("rental-charged")).to_have_text(f"¥{rental.charged_amount:.2f}")
    expect(page.get_by_test_id("timeline")).to_contain_text("Completed")
    screenshot(page, "rental-stopped")
    page.get_by_role("link", name="Wallet", exact=True).first.click()
    expect(page.get_by_test_id("balance-held")).to_have_text("0.00")
    final = wallet_get(organization=membership.organization).available
    assert final == Decimal("1000.00") - rental.charged_amount
    expect(page.get_by_test_id("balance-available")).to_have_text(f"{final:.2f}")
    expect(page.get_by_test_id("transactions")).to_contain_text(f"Rental #{rental.pk}")
