"""Real parallel connections on PostgreSQL: an application is subscribed and paid once, free trial calls are never
more than the trial, and every review counts once in the rating."""

from decimal import Decimal

import pytest

from billing.selectors import wallet_get
from billing.services.ledger import ledger_reconcile
from marketplace.core.errors import Conflict
from marketplace.models import ApplicationUse, ApplicationVersion, ModelCall, SubscriptionPayment
from marketplace.services.applications import (
    application_call_admit,
    application_review_save,
    application_subscribe,
)
from tests.concurrency import race
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.applications import published_application
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_parallel_subscribes_of_one_organization_pay_one_month(require_postgres):
    # given
    application = published_application(pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="29.90")
    buyer = OrganizationFactory()
    owner = MembershipFactory(organization=buyer, role="owner").user
    fund(buyer, "100.00")

    def subscribe(_index: int) -> str:
        try:
            application_subscribe(application=application, organization=buyer, user=owner)
        except Conflict as refusal:
            return refusal.code
        return "subscribed"

    # when
    outcomes = race(8, subscribe)
    # then
    assert outcomes.count("subscribed") == 1 and outcomes.count("already_subscribed") == 7
    assert SubscriptionPayment.objects.count() == 1
    assert wallet_get(organization=buyer).available == Decimal("70.10")
    assert ledger_reconcile() == []


def test_parallel_calls_take_no_more_free_trial_calls_than_the_trial(require_postgres):
    # given 5 free calls
    application = published_application(free_trial_calls=5)
    buyer = OrganizationFactory()

    def admit(_index: int) -> str:
        return application_call_admit(
            application_id=application.pk, organization_id=buyer.pk, seller_id=application.seller_id,
            pricing=application.current_version.pricing, trial_calls=5,
        )  # fmt: skip

    # when 20 calls arrive together
    outcomes = race(20, admit)
    # then
    assert outcomes.count("trial") == 5 and outcomes.count("paid") == 15
    assert ApplicationUse.objects.get().trial_calls_used == 5


def test_parallel_reviews_count_once_each_in_the_rating(require_postgres):
    # given 6 organizations that used the application
    application = published_application()
    reviewers = []
    for _ in range(6):
        membership = MembershipFactory()
        ModelCallFactory(organization=membership.organization, application=application)
        reviewers.append(membership)

    def review(index: int) -> None:
        member = reviewers[index]
        application_review_save(
            application=application, organization=member.organization, user=member.user, stars=index % 5 + 1, text=""
        )

    # when
    race(6, review)
    # then
    application.refresh_from_db()
    assert (application.rating_count, application.rating_total) == (6, 1 + 2 + 3 + 4 + 5 + 1)
    assert ModelCall.objects.count() == 6
