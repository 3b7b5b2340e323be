"""The app store's pages: the storefront (search, categories, ratings, try-it, subscribe, review) and the seller
console (make, version, publish, unpublish, sales), each for its own organization only."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now

from billing.services.gateway import gateway_funds_grow
from marketplace.models import Application, ApplicationSubscription, ApplicationVersion, SubscriptionPayment
from marketplace.services.applications import (
    application_subscribe,
    application_subscription_price_accept,
    application_subscriptions_renew,
    application_version_create,
)
from marketplace.services.model_calls import model_calls_capture
from tests.factories.accounts import MembershipFactory, OrganizationFactory, UserFactory, staff_login
from tests.factories.applications import published_application
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory, ModelServiceFactory


@pytest.fixture
def service(db):
    return ModelServiceFactory(slug="qwen-apps")


@pytest.fixture
def signed_in(client, organization, owner):
    client.force_login(owner)
    return client


def version_fields(service, **changes) -> dict:
    fields = {
        "model_service": service, "system_prompt": "Be brief.", "temperature": None, "max_tokens": None,
        "pricing": ApplicationVersion.Pricing.PER_CALL, "price": Decimal("0.02"), "free_trial_calls": 0, "notes": "",
    }  # fmt: skip
    return {**fields, **changes}


def test_the_storefront_lists_published_applications_by_search_and_category_with_a_flat_query_count(client, service):
    # given two published applications and a draft
    published_application(model_service=service, slug="contract-reviewer")
    coder = published_application(model_service=service, slug="sql-helper")
    Application.objects.filter(pk=coder.pk).update(category="coding", rating_count=2, rating_total=9)
    published_application(model_service=service, slug="secret-draft", publish=False)
    # when
    everything = client.get("/apps/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    coding = client.get("/apps/?category=coding").content.decode()
    searched = client.get("/apps/?q=reviewer").content.decode()
    # then
    assert "Contract Reviewer" in everything and "Sql Helper" in everything and "Secret Draft" not in everything
    assert everything.index("Sql Helper") < everything.index("Contract Reviewer")  # the rated one first
    assert "4.5 (2)" in everything
    assert "Sql Helper" in coding and "Contract Reviewer" not in coding
    assert "Contract Reviewer" in searched and "Sql Helper" not in searched
    with CaptureQueriesContext(connection) as few:
        client.get("/apps/")
    for number in range(8):
        published_application(model_service=service, slug=f"more-{number}")
    with CaptureQueriesContext(connection) as many:
        client.get("/apps/")
    assert len(many) == len(few)


def test_the_application_page_offers_try_it_to_members_and_sign_in_to_visitors(client, signed_in, service):
    # given
    published_application(model_service=service)
    # when
    member_page = signed_in.get("/apps/contract-reviewer/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    client.logout()
    visitor_page = client.get("/apps/contract-reviewer/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    # then
    assert 'data-model="app:contract-reviewer"' in member_page and 'data-token="mktry_' in member_page
    assert "Sign in to try it" in visitor_page and "mktry_" not in visitor_page
    assert client.get("/apps/no-such-app/").status_code == 404


def test_only_organizations_that_used_an_application_review_it_and_the_rating_follows(signed_in, organization, service):
    # given
    application = published_application(model_service=service)
    # when it reviews without having used it
    refused = signed_in.post(
        "/apps/contract-reviewer/review/", {"stars": 5, "text": "great"}, follow=True, HTTP_ACCEPT_LANGUAGE="en"
    )
    # then
    assert "Only organizations that used the application can review it" in refused.content.decode()
    # when it has had an answer from it, reviews, then changes its mind
    ModelCallFactory(organization=organization, model_service=service, application=application)
    signed_in.post("/apps/contract-reviewer/review/", {"stars": 5, "text": "great"})
    signed_in.post("/apps/contract-reviewer/review/", {"stars": 3, "text": "good"})
    # then one review, and the rating is its latest stars
    application.refresh_from_db()
    assert (application.rating_count, application.rating_total, application.reviews.get().text) == (1, 3, "good")


def test_subscribing_from_the_page_charges_the_month_and_cancelling_stops_the_renewal(signed_in, organization, service):
    # given
    fund(organization, "100.00")
    published_application(
        model_service=service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="29.90", slug="tutor"
    )
    # when
    page = signed_in.post("/apps/tutor/subscribe/", follow=True, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    subscription = ApplicationSubscription.objects.get(organization=organization)
    # then
    assert "Subscribed to Tutor" in page and "renews on" in page
    assert subscription.payments.get().amount == Decimal("29.90")
    listed = signed_in.get("/subscriptions/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Tutor" in listed and "¥29.90" in listed
    # when it cancels from the application's page (a `next` outside the site would go to the list instead)
    cancelled = signed_in.post(f"/subscriptions/{subscription.pk}/cancel/", {"next": "/apps/tutor/"})
    elsewhere = signed_in.post(f"/subscriptions/{subscription.pk}/cancel/", {"next": "https://evil.example/"})
    subscription.refresh_from_db()
    assert subscription.status == ApplicationSubscription.Status.CANCELLED
    assert (cancelled.url, elsewhere.url) == ("/apps/tutor/", "/subscriptions/")
    # then at the end of the period it ends instead of renewing
    assert application_subscriptions_renew(moment=subscription.period_end + timedelta(seconds=1)) == 0
    subscription.refresh_from_db()
    assert subscription.status == ApplicationSubscription.Status.ENDED and subscription.payments.count() == 1


def test_a_new_version_changes_an_accepted_subscription_price_only_at_renewal_and_short_funds_end_it(service):
    # given a subscriber at 10.00 a month
    buyer = OrganizationFactory()
    buyer_owner = MembershipFactory(organization=buyer, role="owner").user
    fund(buyer, "25.00")
    application = published_application(
        model_service=service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="10.00", slug="tutor"
    )
    subscription = application_subscribe(application=application, organization=buyer, user=buyer_owner)
    # when the seller makes a version at 12.00
    application_version_create(
        application=application, user=application.owner,
        version=version_fields(service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price=Decimal("12.00")),
    )  # fmt: skip
    subscription.refresh_from_db()
    # and the buyer accepts it (without, it would end at the period's end: tests/marketplace/services/)
    application_subscription_price_accept(subscription=subscription, user=buyer_owner, price=Decimal("12.00"))
    # then the paid period keeps 10.00; the renewal pays 12.00; the renewal after that finds 3.00 and ends it
    assert subscription.price == Decimal("10.00")
    first_end = subscription.period_end
    assert application_subscriptions_renew(moment=first_end) == 1
    assert application_subscriptions_renew(moment=first_end) == 0  # a second run pays nothing more
    subscription.refresh_from_db()
    assert (subscription.price, subscription.period_start) == (Decimal("12.00"), first_end)
    assert application_subscriptions_renew(moment=subscription.period_end) == 0
    subscription.refresh_from_db()
    assert subscription.status == ApplicationSubscription.Status.ENDED
    assert subscription.end_reason == ApplicationSubscription.EndReason.INSUFFICIENT_FUNDS
    assert list(SubscriptionPayment.objects.order_by("pk").values_list("amount", flat=True)) == [
        Decimal("10.00"), Decimal("12.00"),
    ]  # fmt: skip


def test_the_subscriptions_page_shows_a_pending_price_and_accepts_it(signed_in, organization, service):
    # given a subscription at 10.00 whose seller now asks 12.00
    fund(organization, "100.00")
    application = published_application(
        model_service=service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="10.00", slug="tutor"
    )
    signed_in.post("/apps/tutor/subscribe/")
    subscription = ApplicationSubscription.objects.get(organization=organization)
    application_version_create(
        application=application, user=application.owner,
        version=version_fields(service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price=Decimal("12.00")),
    )  # fmt: skip
    # when
    listed = signed_in.get("/subscriptions/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    stale = signed_in.post(
        f"/subscriptions/{subscription.pk}/accept-price/", {"price": "11.00"}, follow=True, HTTP_ACCEPT_LANGUAGE="en"
    )
    subscription.refresh_from_db()
    assert subscription.accepted_price == Decimal("10.00")
    accepted = signed_in.post(
        f"/subscriptions/{subscription.pk}/accept-price/", {"price": "12.00000000"}, follow=True,
        HTTP_ACCEPT_LANGUAGE="en",
    )  # fmt: skip
    # then
    assert "From the next period: ¥12.00" in listed and 'name="price" value="12.00000000"' in listed
    assert "review it and accept again" in stale.content.decode()
    assert "Accepted: it renews at 12.00 a month." in accepted.content.decode()
    assert "From the next period" not in accepted.content.decode()
    subscription.refresh_from_db()
    assert subscription.accepted_price == Decimal("12.00")


def test_a_seller_makes_versions_publishes_and_unpublishes_from_the_console(signed_in, organization, service):
    # when it makes an application
    created = signed_in.post(
        "/sell/apps/new/",
        {
            "listing-name": "Weekly report writer", "listing-slug": "weekly-report", "listing-icon": "📝",
            "listing-tagline": "Turns notes into a report", "listing-category": "writing",
            "listing-description": "Paste your notes.", "version-model_service": service.pk,
            "version-system_prompt": "Write a weekly report.", "version-pricing": "per_call",
            "version-price": "0.03", "version-free_trial_calls": 5, "version-notes": "First",
        },
    )  # fmt: skip
    application = Application.objects.get(slug="weekly-report")
    assert created.status_code == 302 and application.status == Application.Status.DRAFT
    # when it publishes, makes version 2 and unpublishes
    signed_in.post(f"/sell/apps/{application.pk}/status/", {"status": "published"})
    signed_in.post(
        f"/sell/apps/{application.pk}/versions/new/",
        {"model_service": service.pk, "system_prompt": "Shorter.", "pricing": "per_call", "price": "0.04",
         "free_trial_calls": 5, "notes": "Shorter reports"},
    )  # fmt: skip
    application.refresh_from_db()
    assert application.status == Application.Status.PUBLISHED and application.current_version.number == 2
    assert application.current_version.price == Decimal("0.04")
    page = signed_in.get(f"/sell/apps/{application.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Shorter reports" in page and "First" in page
    signed_in.post(f"/sell/apps/{application.pk}/status/", {"status": "unpublished"})
    application.refresh_from_db()
    assert application.status == Application.Status.UNPUBLISHED
    assert signed_in.get("/apps/weekly-report/").status_code == 404
    # and the earnings page is open to it, as to a provider
    assert signed_in.get("/billing/earnings/").status_code == 200


def test_another_organizations_application_is_not_found_in_the_seller_console(signed_in, service):
    # given another seller's application
    theirs = published_application(model_service=service)
    # when / then
    assert signed_in.get(f"/sell/apps/{theirs.pk}/").status_code == 404
    assert signed_in.post(f"/sell/apps/{theirs.pk}/status/", {"status": "unpublished"}).status_code == 404
    assert signed_in.get(f"/sell/apps/{theirs.pk}/versions/new/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == Application.Status.PUBLISHED


def test_the_seller_console_shows_calls_and_earnings_per_application(signed_in, organization, service):
    # given its application with a captured paid call
    application = published_application(seller=organization, model_service=service)
    call = ModelCallFactory(
        model_service=service, application=application, cost=Decimal("0.06"), application_amount=Decimal("0.05"),
        created_at=now(),
    )  # fmt: skip
    fund(call.organization, "10.00")
    gateway_funds_grow(organization_id=call.organization_id, needed=Decimal("1"), count_available_here=True)
    model_calls_capture()
    # when
    page = signed_in.get("/sell/", HTTP_ACCEPT_LANGUAGE="en")
    # then the seller's part: 0.05 less the 10% fee
    html = page.content.decode()
    assert "Contract Reviewer" in html and "¥0.0450" in html
    assert page.context["earnings_chart"]["amounts"][-1] == "0.05"  # ¥0.045 rounds to the fen in the chart


def test_staff_see_applications_subscriptions_and_reviews_in_the_admin_and_cannot_edit_them(client, service):
    # given
    application = published_application(model_service=service)
    staff_login(client, UserFactory(is_staff=True, is_superuser=True))
    # when / then
    for page in ("application", "applicationsubscription", "applicationreview"):
        assert client.get(f"/admin/marketplace/{page}/").status_code == 200
    assert client.get(f"/admin/marketplace/application/{application.pk}/change/").status_code == 200
    client.post(f"/admin/marketplace/application/{application.pk}/change/", {"status": "draft"})
    application.refresh_from_db()
    assert application.status == Application.Status.PUBLISHED
