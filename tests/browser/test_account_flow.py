"""A person signs up, creates an organization, creates an API key and sees its secret exactly once."""

import re

import pytest
from playwright.sync_api import expect

from accounts.models import ApiKey, Organization

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_sign_up_create_organization_and_api_key_shown_once(page, screenshot):
    # sign up
    page.goto("/accounts/signup/")
    page.get_by_label("E-mail").fill("ada@example.com")
    page.get_by_label("Full name").fill("Ada Lovelace")
    page.get_by_label("Password").fill("analytical-engine-1843")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("alert")).to_contain_text("personal workspace is ready")

    # create an organization; it becomes the active one
    page.goto("/accounts/organizations/")
    page.get_by_label("Organization name").fill("Difference Lab 差分实验室")
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Difference Lab 差分实验室")
    expect(page.get_by_test_id("org-switcher")).to_have_value(str(Organization.objects.get(is_personal=False).pk))

    # create an API key through the htmx form
    page.goto("/accounts/api-keys/")
    assert page.evaluate("typeof htmx") == "object", "htmx is served from the npm package"
    page.get_by_label("Key name").fill("notebook")
    page.get_by_label("Model gateway").check()
    page.get_by_role("button", name="Create key").click()
    new_key = page.get_by_test_id("new-key")
    expect(new_key).to_be_visible()
    secret = page.locator("#new-key-secret").inner_text()
    assert re.fullmatch(r"mk_live_[0-9a-f]{12}_[A-Za-z0-9_-]{32}", secret)
    expect(page.get_by_test_id("api-key-table")).to_contain_text("notebook")
    screenshot(page, "api-key-created")

    # the secret is never shown again
    page.goto("/accounts/api-keys/")
    expect(page.get_by_test_id("api-key-table")).to_contain_text("notebook")
    assert secret not in page.content()
    api_key = ApiKey.objects.get(name="notebook")
    assert api_key.organization.name == "Difference Lab 差分实验室"
    assert api_key.scopes == ["gateway", "read"]


def test_interface_switches_to_chinese(page, screenshot):
    page.goto("/")
    page.get_by_label("Language").select_option("zh-hans")
    expect(page.get_by_role("link", name="登录")).to_be_visible()
    screenshot(page, "home-zh-hans")
