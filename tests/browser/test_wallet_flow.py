"""A buyer tops up in test mode, sees the balance and the transaction, and downloads the CSV."""

import csv
import io
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.factories.accounts import PASSWORD, MembershipFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_buyer_tops_up_in_test_mode_and_downloads_the_csv(page, screenshot, settings):
    # given
    settings.STRIPE_SECRET_KEY, settings.BILLING_TEST_TOPUPS = "", True
    buyer = MembershipFactory(organization__name="Lab 实验室").user
    page.goto("/accounts/login/")
    page.get_by_label("E-mail").fill(buyer.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # when
    page.get_by_role("link", name="Wallet", exact=True).first.click()
    expect(page.get_by_test_id("test-mode")).to_be_visible()
    expect(page.get_by_test_id("balance-available")).to_have_text("0.00")
    page.get_by_label("Add funds").fill("250.00")
    page.get_by_role("button", name="Top up (test mode)").click()
    # then
    expect(page.get_by_test_id("balance-available")).to_have_text("250.00")
    expect(page.get_by_role("alert")).to_contain_text("250.00 CNY added (test mode: no payment was taken).")
    transactions = page.get_by_test_id("transactions")
    expect(transactions).to_contain_text("Top-up (test mode)")
    expect(transactions).to_contain_text("250.00")
    expect(page.get_by_test_id("top-ups")).to_contain_text("test mode")
    screenshot(page, "wallet-after-top-up")
    with page.expect_download() as download_info:
        page.get_by_test_id("csv-export").click()
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text(encoding="utf-8"))))
    assert [(row["kind"], row["memo"], row["available_change"]) for row in rows] == [
        ("top_up", "Top-up (test mode)", "250.00000000")
    ]
