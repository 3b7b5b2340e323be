"""Subscriptions renew at the price the buyer accepted: a seller's higher price applies only once the buyer accepts
it (told in the app and by e-mail), else the subscription ends at its period's end; renewals count toward the
monthly spend cap."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import translation

from accounts.models import Notification
from billing.selectors import wallet_get
from billing.services.quotas import quota_get
from marketplace.core.errors import Conflict
from marketplace.models import ApplicationVersion, SubscriptionPayment
from marketplace.services.applications import (
    application_subscribe,
    application_subscription_price_accept,
    application_subscriptions_renew,
    application_version_create,
)
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.applications import published_application
from tests.factories.billing import fund
from tests.factories.marketplace import ModelServiceFactory

SUBSCRIPTION = ApplicationVersion.Pricing.SUBSCRIPTION


@pytest.fixture
def service(db):
    return ModelServiceFactory(slug="qwen-apps")


@pytest.fixture
def buyer(db):
    organization = OrganizationFactory()
    MembershipFactory(organization=organization, role="owner", user__email="owner@buyer.example")
    fund(organization, "1000.00")
    return organization


def buyer_owner(buyer):
    return buyer.memberships.get(role="owner").user


def subscribed(buyer, service, price="1.00"):
    application = published_application(model_service=service, pricing=SUBSCRIPTION, price=price, slug="tutor")
    return application, application_subscribe(application=application, organization=buyer, user=buyer_owner(buyer))


def reprice(application, service, price):
    version = {
        "model_service": service, "system_prompt": "Be brief.", "temperature": None, "max_tokens": None,
        "pricing": SUBSCRIPTION, "price": Decimal(price), "free_trial_calls": 0, "notes": "",
    }  # fmt: skip
    return application_version_create(application=application, user=application.owner, version=version)


def test_a_higher_price_is_told_to_the_buyer_and_without_acceptance_the_subscription_ends_at_the_period_end(
    buyer, service, mailoutbox, django_capture_on_commit_callbacks
):
    # given a subscriber at 1.00 a month
    application, subscription = subscribed(buyer, service, price="1.00")
    # when the seller raises the price to 500.00 (the notice is worded in the language active then)
    with django_capture_on_commit_callbacks(execute=True), translation.override("en"):
        reprice(application, service, "500.00")
    # then the buyer is told, in the app and by e-mail
    notice = Notification.objects.get(organization=buyer, kind="subscription_price_change")
    assert notice.title == "Tutor: the monthly price rises from 1.00 to 500.00"
    assert [(mail.to, mail.subject) for mail in mailoutbox] == [(["owner@buyer.example"], notice.title)]
    # when the period ends and the buyer has not accepted
    assert application_subscriptions_renew(moment=subscription.period_end) == 0
    # then it ends, and nothing more is charged
    subscription.refresh_from_db()
    assert (subscription.status, subscription.end_reason) == ("ended", "price_not_accepted")
    assert list(SubscriptionPayment.objects.values_list("amount", flat=True)) == [Decimal("1.00")]
    assert wallet_get(organization=buyer).available == Decimal("999.00")


def test_a_higher_price_the_buyer_accepted_applies_from_the_next_renewal(buyer, service):
    # given
    application, subscription = subscribed(buyer, service, price="1.00")
    reprice(application, service, "12.00")
    # when
    accepted = application_subscription_price_accept(
        subscription=subscription, user=buyer_owner(buyer), price=Decimal("12.00")
    )
    # then the paid period keeps its price; the renewal pays the accepted one
    assert (accepted.price, accepted.accepted_price) == (Decimal("1.00"), Decimal("12.00"))
    assert application_subscriptions_renew(moment=subscription.period_end) == 1
    subscription.refresh_from_db()
    assert (subscription.status, subscription.price, subscription.version.number) == ("active", Decimal("12.00"), 2)
    assert list(SubscriptionPayment.objects.order_by("pk").values_list("amount", flat=True)) == [
        Decimal("1.00"), Decimal("12.00"),
    ]  # fmt: skip


def test_accepting_a_price_that_is_no_longer_the_sellers_is_a_conflict_and_changes_nothing(buyer, service):
    # given the buyer saw 12.00, and the seller has since asked 20.00
    application, subscription = subscribed(buyer, service, price="1.00")
    reprice(application, service, "12.00")
    reprice(application, service, "20.00")
    # when
    with pytest.raises(Conflict) as error:
        application_subscription_price_accept(subscription=subscription, user=buyer_owner(buyer), price=Decimal("12"))
    # then
    assert error.value.code == "price_changed"
    subscription.refresh_from_db()
    assert subscription.accepted_price == Decimal("1.00")


def test_a_lower_price_applies_at_renewal_without_acceptance(buyer, service):
    # given
    application, subscription = subscribed(buyer, service, price="10.00")
    reprice(application, service, "8.00")
    # when
    assert application_subscriptions_renew(moment=subscription.period_end) == 1
    # then
    subscription.refresh_from_db()
    assert (subscription.price, subscription.accepted_price) == (Decimal("8.00"), Decimal("8.00"))


def test_a_renewal_beyond_the_monthly_spend_cap_is_refused_and_the_subscription_ends(buyer, service):
    # given a 50.00 monthly cap, and a price the buyer accepted that passes it
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap = Decimal("50.00")
    quota.save()
    application, subscription = subscribed(buyer, service, price="1.00")
    reprice(application, service, "500.00")
    application_subscription_price_accept(subscription=subscription, user=buyer_owner(buyer), price=Decimal("500"))
    # when
    assert application_subscriptions_renew(moment=subscription.period_end + timedelta(seconds=1)) == 0
    # then nothing is charged beyond the cap
    subscription.refresh_from_db()
    assert (subscription.status, subscription.end_reason) == ("ended", "spend_limit")
    assert list(SubscriptionPayment.objects.values_list("amount", flat=True)) == [Decimal("1.00")]
    assert wallet_get(organization=buyer).available == Decimal("999.00")


def test_the_buyer_sees_a_pending_price_and_accepts_it_through_the_api(buyer, service, api_client_for):
    # given
    application, subscription = subscribed(buyer, service, price="1.00")
    reprice(application, service, "12.00")
    client = api_client_for(buyer)
    # when
    listed = client.get(f"/api/v1/app-subscriptions/{subscription.pk}/").json()
    accepted = client.post(f"/api/v1/app-subscriptions/{subscription.pk}/accept-price/", {"price": "12.00"})
    # then
    assert (listed["accepted_price"], listed["pending_price"]) == ("1.00000000", "12.00000000")
    assert accepted.status_code == 200
    assert (accepted.json()["accepted_price"], accepted.json()["pending_price"]) == ("12.00000000", None)
