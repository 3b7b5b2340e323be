from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import translation
from django.utils.timezone import now

from accounts.models import Notification
from billing.models import Hold, LedgerTransaction, SpendAlert, UsageCharge, UsageEvent
from billing.selectors import wallet_get
from billing.services.ledger import InsufficientFunds, credit_line_set
from billing.services.quotas import QuotaExceeded, month_spend, quota_get
from marketplace import tasks
from marketplace.core.errors import NotFound
from marketplace.models import GatewayPolicy, Offering, Rental, RentalTransition, ResidencyZone
from marketplace.services import rentals as services
from marketplace.services.rentals import CapacityExhausted, InvalidTransition, RentalRequest
from tests.factories.accounts import OrganizationFactory, api_key_for
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory, OfferingFactory

PRICE = Decimal("36.00000000")  # per accelerator-hour: one cent per accelerator-second
T0 = now().replace(microsecond=0)


@pytest.fixture
def offering(db):
    return OfferingFactory(accelerators_per_node=1, capacity_nodes=3, on_demand_price=PRICE,
                           interruptible_price=Decimal("18"), reserved_1w_discount_percent=Decimal("20"))  # fmt: skip


@pytest.fixture
def buyer(db):
    organization = OrganizationFactory()
    fund(organization, "1000.00")
    return organization


def rent(buyer, offering, moment=T0, **kwargs) -> Rental:
    request = RentalRequest(offering_id=offering.pk, accelerators=kwargs.pop("accelerators", 1), **kwargs)
    return services.rental_create(organization=buyer, request=request, moment=moment)


def running(buyer, offering, moment=T0, **kwargs) -> Rental:
    rental = rent(buyer, offering, moment=moment, **kwargs)
    return services.rental_provision(rental_id=rental.pk, moment=moment)


def test_admission_takes_nodes_counts_quota_holds_runway_and_snapshots(
    admission_path, buyer, offering, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        rental = rent(buyer, offering, accelerators=2)

    offering.refresh_from_db()
    assert offering.rented_nodes == 2
    assert quota_get(organization_id=buyer.pk).accelerators_in_use == 2
    assert rental.status == Rental.Status.PENDING
    assert rental.price_per_accelerator_hour == PRICE
    assert rental.hold.amount == PRICE * 2  # one hour of runway
    assert rental.specs["accelerator_slug"] == "nvidia-h100-sxm"
    assert rental.ends_at is None
    assert wallet_get(organization=buyer).available == Decimal("928.00")
    assert [(t.from_status, t.to_status) for t in rental.transitions.all()] == [("", "pending")]
    assert len(callbacks) == 1  # provisioning enqueued after commit


def test_a_burst_of_admissions_asks_for_one_provisioning_run_that_starts_them_all(
    buyer, offering, django_capture_on_commit_callbacks, monkeypatch
):
    enqueued = []
    monkeypatch.setattr(tasks.rentals_provision_due_task, "delay", lambda: enqueued.append("run"))
    with django_capture_on_commit_callbacks(execute=True):
        first, second = rent(buyer, offering), rent(buyer, offering)
    assert enqueued == ["run"]

    assert services.rentals_provision_due(moment=T0) == 2

    assert {r.status for r in Rental.objects.filter(pk__in=[first.pk, second.pk])} == {Rental.Status.RUNNING}
    with django_capture_on_commit_callbacks(execute=True):
        rent(buyer, offering)
    assert enqueued == ["run", "run"]  # the run cleared the request: an admission after it asks again


def test_capacity_exhausted_is_409_and_writes_nothing(admission_path, buyer, offering):
    rent(buyer, offering, accelerators=3)

    with pytest.raises(CapacityExhausted) as error:
        rent(buyer, offering)

    assert error.value.status_code == 409
    assert error.value.extra["free_nodes"] == 0
    assert Rental.objects.count() == 1
    assert quota_get(organization_id=buyer.pk).accelerators_in_use == 3


def test_insufficient_funds_is_402_with_the_missing_amount_and_writes_nothing(admission_path, offering):
    poor = OrganizationFactory()
    fund(poor, "10.00")

    with pytest.raises(InsufficientFunds) as error:
        rent(poor, offering)

    assert error.value.status_code == 402
    assert Decimal(error.value.extra["missing"]) == Decimal("26.00")
    offering.refresh_from_db()
    assert offering.rented_nodes == 0
    assert not Rental.objects.exists() and not Hold.objects.exists()
    assert quota_get(organization_id=poor.pk).accelerators_in_use == 0


def test_credit_line_counts_as_funds(admission_path, offering):
    organization = OrganizationFactory()
    credit_line_set(organization=organization, limit=Decimal("50"))

    rental = rent(organization, offering)

    assert wallet_get(organization=organization).available == -PRICE
    assert rental.hold.amount == PRICE


def test_concurrency_quota_is_403_with_limit_and_use(admission_path, buyer, offering):
    quota = quota_get(organization_id=buyer.pk)
    quota.max_concurrent_accelerators = 2
    quota.save()
    rent(buyer, offering, accelerators=2)

    with pytest.raises(QuotaExceeded) as error:
        rent(buyer, offering)

    assert error.value.status_code == 403
    assert error.value.extra == {
        "limit": "max_concurrent_accelerators", "current": 2, "maximum": 2, "resets_at": None,
    }  # fmt: skip
    offering.refresh_from_db()
    assert offering.rented_nodes == 2


def test_monthly_spend_cap_is_429_with_when_it_resets(admission_path, buyer, offering):
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap = Decimal("30")
    quota.save()

    with pytest.raises(QuotaExceeded) as error:
        rent(buyer, offering)

    assert error.value.status_code == 429
    assert error.value.extra["limit"] == "monthly_spend_cap"
    assert error.value.extra["resets_at"].endswith(("+08:00", "+00:00"))
    assert not Rental.objects.exists()


def test_monthly_spend_cap_counts_what_was_already_charged_this_month(admission_path, buyer, offering):
    # given: ¥72 charged this month (two hours of one accelerator)
    rental = running(buyer, offering)
    services.rental_stop(rental_id=rental.pk, moment=T0 + timedelta(hours=2))
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap = Decimal("100")
    quota.save()

    # when / then: another hour's runway (¥36) would pass ¥100
    with pytest.raises(QuotaExceeded) as error:
        rent(buyer, offering)
    assert Decimal(error.value.extra["current"]) == Decimal("72")
    quota.monthly_spend_cap = Decimal("108")
    quota.save()
    assert rent(buyer, offering).hold.amount == PRICE


def test_monthly_spend_cap_counts_model_calls_at_admission_on_both_paths(admission_path, buyer, offering):
    # given: ¥80 of model calls this month and a ¥100 cap: compute and tokens share it
    ModelCallFactory(organization=buyer, cost=Decimal("80"), created_at=T0)
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap = Decimal("100")
    quota.save()
    # when / then: an hour's runway (¥36) would pass ¥100
    with pytest.raises(QuotaExceeded) as error:
        rent(buyer, offering)
    assert (error.value.extra["limit"], Decimal(error.value.extra["current"])) == ("monthly_spend_cap", Decimal("80"))
    assert not Rental.objects.exists()
    assert wallet_get(organization=buyer).available == Decimal("1000.00")


def test_the_runway_is_held_only_as_far_as_the_monthly_cap_and_the_rental_stops_at_it(buyer, offering):
    # given: a ¥40 cap, and a rental at ¥36 an hour whose first hour is charged
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap = Decimal("40")
    quota.save()
    rental = running(buyer, offering)
    # when: the tick after the first hour tops the runway up
    services.rental_settle(rental_id=rental.pk, moment=T0 + timedelta(hours=1))
    # then: it holds only the ¥4 the cap has room for, not another hour
    rental.refresh_from_db()
    assert (rental.status, rental.hold.remaining) == (Rental.Status.RUNNING, Decimal("4.00"))
    # when: the next tick comes 500 s later (¥5 of use)
    services.rental_settle(rental_id=rental.pk, moment=T0 + timedelta(hours=1, seconds=500))
    # then: it is charged up to the cap and no further, and suspended for the cap
    rental.refresh_from_db()
    assert (rental.status, rental.suspension_reason) == (Rental.Status.SUSPENDED, Rental.SuspensionReason.SPEND_CAP)
    assert month_spend(organization_id=buyer.pk, moment=T0 + timedelta(hours=1)) == Decimal("40.00")


def test_api_key_monthly_spend_limit_is_429_and_other_keys_are_not_bound_by_it(admission_path, buyer, offering):
    limited, _secret = api_key_for(buyer)
    limited.monthly_spend_limit = Decimal("30")
    limited.save()
    other, _secret = api_key_for(buyer)
    order = RentalRequest(offering_id=offering.pk, accelerators=1)

    with pytest.raises(QuotaExceeded) as error:
        services.rental_create(organization=buyer, request=order, api_key=limited, moment=T0)

    assert (error.value.status_code, error.value.extra["limit"]) == (429, "api_key_monthly_spend_limit")
    assert services.rental_create(organization=buyer, request=order, api_key=other, moment=T0).api_key == other


def test_first_rental_of_a_new_organization_opens_its_quota_and_held_funds(admission_path, offering):
    # given: funds only; no quota row and no held-funds account yet
    organization = OrganizationFactory()
    fund(organization, "100.00")

    rent(organization, offering)

    assert quota_get(organization_id=organization.pk).accelerators_in_use == 1
    assert wallet_get(organization=organization).held == PRICE


def test_the_admitted_rental_returned_is_the_one_stored(admission_path, buyer, offering):
    with translation.override("en"):
        rental = rent(buyer, offering, accelerators=2)

    stored = Rental.objects.select_related("hold").get(pk=rental.pk)
    fields = [field.attname for field in Rental._meta.concrete_fields]
    assert {name: getattr(rental, name) for name in fields} == {name: getattr(stored, name) for name in fields}
    hold_fields = [field.attname for field in Hold._meta.concrete_fields]
    assert {n: getattr(rental.hold, n) for n in hold_fields} == {n: getattr(stored.hold, n) for n in hold_fields}
    assert rental.hold.description == f"Rental #{rental.pk}: {offering.name}"
    move = LedgerTransaction.objects.get(idempotency_key=f"hold:{rental.hold.pk}")
    assert sorted(move.postings.values_list("amount", flat=True)) == [-PRICE * 2, PRICE * 2]


def test_percent_signs_in_the_offering_name_reach_the_hold_as_written(admission_path, buyer, offering):
    # given: a name that is also a format() template (the statement fills the rental's key into the hold's texts)
    name = "100% H100 %1$s %s %%"
    Offering.objects.filter(pk=offering.pk).update(name=name)

    with translation.override("en"):
        rental = rent(buyer, offering)

    stored = Hold.objects.get(pk=rental.hold.pk)
    assert stored.description == rental.hold.description == f"Rental #{rental.pk}: {name}"
    assert (stored.reference, stored.idempotency_key) == (f"rental:{rental.pk}", f"rental-hold:{rental.pk}")
    move = LedgerTransaction.objects.get(idempotency_key=f"hold:{stored.pk}")
    assert (move.memo, move.reference) == (stored.description, stored.reference)


def test_residency_zone_not_of_the_offering_is_422(buyer, offering):
    with pytest.raises(services.Unprocessable) as error:
        rent(buyer, offering, residency_zone="cn-south")

    assert (error.value.status_code, error.value.code) == (422, "residency_zone_mismatch")


@pytest.mark.parametrize("pinned_by", ["organization", "api_key"])
def test_rental_outside_the_organization_or_keys_residency_pin_is_refused_and_writes_nothing(
    admission_path, buyer, offering, pinned_by
):
    # given: the offering is in cn-east; the gateway's pin (organization's or key's) says cn-south
    key, _secret = api_key_for(buyer)
    owner = {"organization": {"organization": buyer}, "api_key": {"api_key": key}}[pinned_by]
    GatewayPolicy.objects.create(residency_zone=ResidencyZone.CN_SOUTH, **owner)
    # when
    with pytest.raises(services.Unprocessable) as error:
        services.rental_create(
            organization=buyer, request=RentalRequest(offering_id=offering.pk, accelerators=1), api_key=key, moment=T0
        )
    # then
    assert (error.value.status_code, error.value.code) == (422, "residency_zone_pinned")
    assert error.value.extra == {"offering_zone": "cn-east", "pinned_zones": ["cn-south"]}
    offering.refresh_from_db()
    assert offering.rented_nodes == 0
    assert Rental.objects.count() == 0
    assert Hold.objects.count() == 0
    assert wallet_get(organization=buyer).available == Decimal("1000.00")


def test_rental_inside_the_residency_pin_is_admitted(admission_path, buyer, offering):
    # given
    GatewayPolicy.objects.create(organization=buyer, residency_zone=ResidencyZone.CN_EAST)
    # when
    rental = rent(buyer, offering)
    # then
    assert (rental.status, rental.residency_zone) == (Rental.Status.PENDING, "cn-east")


def test_rental_is_refused_when_the_key_and_organization_pins_disagree(admission_path, buyer, offering):
    # given: as at the gateway, two different pins leave no zone at all
    key, _secret = api_key_for(buyer)
    GatewayPolicy.objects.create(organization=buyer, residency_zone=ResidencyZone.CN_EAST)
    GatewayPolicy.objects.create(api_key=key, residency_zone=ResidencyZone.CN_SOUTH)
    # when
    with pytest.raises(services.Unprocessable) as error:
        services.rental_create(
            organization=buyer, request=RentalRequest(offering_id=offering.pk, accelerators=1), api_key=key, moment=T0
        )
    # then
    assert error.value.code == "residency_zone_pinned"
    assert error.value.extra["pinned_zones"] == ["cn-east", "cn-south"]
    assert Rental.objects.count() == 0


def test_unpublished_offering_is_not_found(admission_path, buyer, offering):
    Offering.objects.filter(pk=offering.pk).update(status=Offering.Status.PAUSED)

    with pytest.raises(NotFound):
        rent(buyer, offering)


def test_reserved_term_holds_the_whole_term_at_its_discount(admission_path, buyer, offering):
    fund(buyer, "5000.00")

    rental = rent(buyer, offering, mode=Rental.Mode.RESERVED_1W)

    assert rental.price_per_accelerator_hour == PRICE * Decimal("0.8")
    assert rental.hold.amount == PRICE * Decimal("0.8") * 7 * 24
    assert rental.ends_at == T0 + timedelta(days=7)


def test_running_rental_is_charged_per_second_at_the_snapshotted_price(buyer, offering):
    rental = running(buyer, offering, accelerators=2)
    Offering.objects.filter(pk=offering.pk).update(on_demand_price=PRICE * 10)  # a price change later

    services.rental_settle(rental_id=rental.pk, moment=T0 + timedelta(seconds=90))

    charge = UsageCharge.objects.get(rental=rental)
    assert charge.quantity == 180  # accelerator-seconds
    assert charge.amount == Decimal("1.80")
    rental.refresh_from_db()
    assert rental.charged_amount == Decimal("1.80")
    assert rental.price_per_accelerator_hour == PRICE
    # the runway is topped up again to one hour ahead
    rental.hold.refresh_from_db()
    assert rental.hold.remaining == PRICE * 2


def test_settling_twice_at_the_same_moment_changes_nothing_more(buyer, offering):
    rental = running(buyer, offering)
    moment = T0 + timedelta(seconds=61)

    services.rental_settle(rental_id=rental.pk, moment=moment)
    ledger = LedgerTransaction.objects.count()
    services.rental_settle(rental_id=rental.pk, moment=moment)

    assert LedgerTransaction.objects.count() == ledger
    assert UsageEvent.objects.filter(rental=rental).count() == 1
    assert UsageCharge.objects.get(rental=rental).amount == Decimal("0.61")


def test_usage_past_the_runway_after_missed_ticks_is_charged_from_funds_then_left_uncollected(offering):
    # given: ¥100 and a rental whose one-hour runway (¥36) was the last thing held; no tick ran for 4 hours
    organization = OrganizationFactory()
    fund(organization, "100.00")
    rental = running(organization, offering)
    # when: it is stopped 4 hours later (¥144 of usage)
    services.rental_stop(rental_id=rental.pk, moment=T0 + timedelta(hours=4))
    # then: the hold grew by what the wallet could still spend; only the rest is uncollected
    rental.refresh_from_db()
    assert rental.charged_amount == Decimal("100.00")
    assert rental.uncollected_amount == Decimal("44.00")
    assert wallet_get(organization=organization).available == 0


def test_stop_charges_up_to_now_releases_hold_nodes_and_quota(buyer, offering):
    rental = running(buyer, offering)

    services.rental_stop(rental_id=rental.pk, moment=T0 + timedelta(minutes=10))

    rental.refresh_from_db()
    offering.refresh_from_db()
    assert rental.status == Rental.Status.COMPLETED
    assert rental.charged_amount == Decimal("6.00")
    assert rental.hold.status == Hold.Status.RELEASED
    assert offering.rented_nodes == 0
    assert quota_get(organization_id=buyer.pk).accelerators_in_use == 0
    assert wallet_get(organization=buyer).available == Decimal("994.00")
    assert wallet_get(organization=buyer).held == 0


def test_stopping_a_reserved_term_early_charges_the_whole_term(buyer, offering):
    fund(buyer, "5000.00")
    rental = running(buyer, offering, mode=Rental.Mode.RESERVED_1W)

    services.rental_stop(rental_id=rental.pk, moment=T0 + timedelta(hours=1))

    rental.refresh_from_db()
    assert rental.charged_amount == PRICE * Decimal("0.8") * 7 * 24


def test_cancel_before_start_releases_the_hold_in_full(buyer, offering):
    rental = rent(buyer, offering, starts_at=T0 + timedelta(hours=2))

    services.rental_cancel(rental_id=rental.pk, moment=T0 + timedelta(minutes=5))

    rental.refresh_from_db()
    assert rental.status == Rental.Status.CANCELLED
    assert rental.charged_amount == 0
    assert wallet_get(organization=buyer).available == Decimal("1000.00")


def test_scheduled_rental_starts_only_when_due(buyer, offering):
    rental = rent(buyer, offering, starts_at=T0 + timedelta(hours=2))

    assert services.rental_provision(rental_id=rental.pk, moment=T0).status == Rental.Status.PENDING
    assert services.rental_lifecycle_due(moment=T0 + timedelta(hours=2)) == ([rental.pk], [])
    assert services.rental_provision(rental_id=rental.pk, moment=T0 + timedelta(hours=2)).status == "running"


def test_the_lifecycle_tick_asks_for_the_provisioning_run_when_a_scheduled_rental_is_due(buyer, offering, monkeypatch):
    enqueued = []
    monkeypatch.setattr(tasks.rentals_provision_due_task, "delay", lambda: enqueued.append("run"))
    rental = rent(buyer, offering, starts_at=now() + timedelta(hours=2), moment=now())
    assert tasks.rental_lifecycle_tick_task() == (0, 0) and enqueued == []

    Rental.objects.filter(pk=rental.pk).update(starts_at=now() - timedelta(minutes=1))  # its time has come

    assert tasks.rental_lifecycle_tick_task() == (1, 0) and enqueued == ["run"]


def test_fixed_duration_rental_is_charged_to_its_end_and_completes(buyer, offering):
    rental = running(buyer, offering, hours=1)
    later = T0 + timedelta(hours=1, minutes=3)

    assert services.rental_lifecycle_due(moment=later) == ([], [rental.pk])
    services.rental_complete(rental_id=rental.pk, reason="Term ended", moment=later)

    rental.refresh_from_db()
    assert rental.charged_amount == PRICE  # not the three minutes past the end
    assert rental.status == Rental.Status.COMPLETED


def test_failure_charges_time_delivered_and_credits_per_the_rule(buyer, offering, settings):
    settings.RENTAL_FAILURE_CREDIT_HOURS = 1
    rental = running(buyer, offering)
    for hour in (1, 2):
        services.rental_settle(rental_id=rental.pk, moment=T0 + timedelta(hours=hour))

    services.rental_fail(rental_id=rental.pk, reason="GPU fell off the bus", moment=T0 + timedelta(hours=3))

    rental.refresh_from_db()
    assert rental.status == Rental.Status.FAILED
    assert rental.charged_amount == PRICE * 3
    assert wallet_get(organization=buyer).available == Decimal("1000") - PRICE * 2  # three hours less one credited
    assert Notification.objects.filter(organization=buyer, kind="rental_failed").exists()


def test_preemption_stops_billing_and_tells_the_buyer(buyer, offering):
    rental = running(buyer, offering, mode=Rental.Mode.INTERRUPTIBLE)

    services.rental_preempt(rental_id=rental.pk, reason="Capacity reclaimed", moment=T0 + timedelta(minutes=20))

    rental.refresh_from_db()
    assert rental.status == Rental.Status.PREEMPTED
    assert rental.charged_amount == Decimal("6.00")  # 1200 s at 18/h
    assert Notification.objects.filter(organization=buyer, kind="rental_preempted").exists()


def test_only_interruptible_rentals_can_be_preempted(buyer, offering):
    rental = running(buyer, offering)

    with pytest.raises(InvalidTransition):
        services.rental_preempt(rental_id=rental.pk, reason="no")


def test_out_of_funds_rental_is_suspended_within_one_tick_and_never_overspends(offering, settings):
    organization = OrganizationFactory()
    fund(organization, "40.00")
    credit_line_set(organization=organization, limit=Decimal("5"))
    rental = running(organization, offering)
    tick = timedelta(seconds=settings.METERING_TICK_SECONDS)
    moment = T0
    while Rental.objects.get(pk=rental.pk).status == Rental.Status.RUNNING:
        moment += tick
        services.rental_settle(rental_id=rental.pk, moment=moment)
        assert moment < T0 + timedelta(hours=2), "never suspended"

    rental.refresh_from_db()
    funds_last_until = T0 + timedelta(seconds=45 * 100)  # ¥45 at one cent a second
    assert moment <= funds_last_until + tick
    assert rental.charged_amount <= Decimal("45.00")
    assert rental.suspension_reason == Rental.SuspensionReason.FUNDS
    assert wallet_get(organization=organization).available >= Decimal("-5.00")
    assert Notification.objects.filter(organization=organization, kind="rental_suspended").exists()


def test_suspended_rental_resumes_after_a_top_up_within_grace(offering):
    organization = OrganizationFactory()
    fund(organization, "36.00")
    rental = running(organization, offering)
    services.rental_settle(rental_id=rental.pk, moment=T0 + timedelta(minutes=59, seconds=30))
    assert Rental.objects.get(pk=rental.pk).status == Rental.Status.SUSPENDED

    fund(organization, "100.00")
    services.rental_settle(rental_id=rental.pk, moment=T0 + timedelta(minutes=65))

    rental.refresh_from_db()
    assert rental.status == Rental.Status.RUNNING
    assert rental.metered_until == T0 + timedelta(minutes=65)  # suspended time is not billed


def test_suspended_rental_completes_after_the_grace_period(offering, settings):
    organization = OrganizationFactory()
    fund(organization, "36.00")
    rental = running(organization, offering)
    suspended_at = T0 + timedelta(minutes=59, seconds=30)
    services.rental_settle(rental_id=rental.pk, moment=suspended_at)

    services.rental_settle(
        rental_id=rental.pk, moment=suspended_at + timedelta(minutes=settings.RENTAL_RESUME_GRACE_MINUTES)
    )

    rental.refresh_from_db()
    assert rental.status == Rental.Status.COMPLETED
    offering.refresh_from_db()
    assert offering.rented_nodes == 0


def test_spend_cap_suspends_and_alerts_once_per_threshold(buyer, offering):
    quota = quota_get(organization_id=buyer.pk)
    quota.monthly_spend_cap, quota.alert_thresholds = Decimal("50"), [50, 100]
    quota.save()
    rental = running(buyer, offering)

    services.rental_settle(rental_id=rental.pk, moment=T0 + timedelta(seconds=3000))  # ¥30: 60 %
    services.metering_tick(moment=T0 + timedelta(seconds=3000))
    services.metering_tick(moment=T0 + timedelta(seconds=3060))
    services.rental_settle(rental_id=rental.pk, moment=T0 + timedelta(seconds=5000))  # ¥50: the cap

    services.metering_tick(moment=T0 + timedelta(seconds=5000))

    rental.refresh_from_db()
    assert rental.status == Rental.Status.SUSPENDED
    assert rental.suspension_reason == Rental.SuspensionReason.SPEND_CAP
    assert sorted(SpendAlert.objects.values_list("threshold_percent", flat=True)) == [50, 100]
    assert Notification.objects.filter(organization=buyer, kind="spend_alert").count() == 2


ILLEGAL = [
    (Rental.Status.PENDING, Rental.Status.RUNNING),
    (Rental.Status.PENDING, Rental.Status.SUSPENDED),
    (Rental.Status.RUNNING, Rental.Status.CANCELLED),
    (Rental.Status.RUNNING, Rental.Status.PENDING),
    (Rental.Status.SUSPENDED, Rental.Status.PREEMPTED),
    (Rental.Status.COMPLETED, Rental.Status.RUNNING),
    (Rental.Status.CANCELLED, Rental.Status.PROVISIONING),
    (Rental.Status.FAILED, Rental.Status.RUNNING),
    (Rental.Status.PREEMPTED, Rental.Status.RUNNING),
]


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transitions_raise_and_record_nothing(buyer, offering, current, target):
    rental = rent(buyer, offering)
    Rental.objects.filter(pk=rental.pk).update(status=current)
    rental.refresh_from_db()

    with pytest.raises(InvalidTransition):
        services._rental_transition(rental=rental, to=target, moment=T0)

    assert RentalTransition.objects.filter(rental=rental).count() == 1


LEGAL = [(source, target) for source, targets in Rental.TRANSITIONS.items() for target in targets]


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_legal_transitions_are_recorded_with_time_and_reason(buyer, offering, current, target):
    rental = rent(buyer, offering)
    Rental.objects.filter(pk=rental.pk).update(status=current)
    rental.refresh_from_db()

    assert services._rental_transition(rental=rental, to=target, moment=T0, reason="because")

    last = RentalTransition.objects.filter(rental=rental).last()
    assert (last.from_status, last.to_status, last.reason, last.at) == (current, target, "because", T0)
