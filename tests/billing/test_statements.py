import csv
import io
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from billing.models import Statement
from billing.services.holds import hold_capture, hold_place, hold_release
from billing.services.refunds import refund_request
from billing.services.statements import statement_close
from billing.tasks import statement_close_due_task, statement_close_task
from marketplace.core.errors import Conflict
from tests.concurrency import race
from tests.factories.accounts import MembershipFactory, OrganizationFactory, UserFactory
from tests.factories.billing import fund

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def clock(monkeypatch):
    """Set the platform's clock: rows written afterwards carry that time (the ledger cannot be backdated)."""

    def set_to(*args) -> None:
        moment = datetime(*args, tzinfo=SHANGHAI)
        monkeypatch.setattr(timezone, "now", lambda: moment)

    return set_to


def _spend(organization, provider, amount: str, rental: str) -> None:
    hold = hold_place(organization=organization, amount=Decimal(amount), idempotency_key=f"h:{rental}:{amount}",
                      reference=rental, description="GPU time")  # fmt: skip
    hold_capture(hold_id=hold.pk, amount=Decimal(amount), provider=provider, idempotency_key=f"u:{rental}:{amount}",
                 memo=f"GPU time {rental}")  # fmt: skip
    hold_release(hold_id=hold.pk)


@pytest.fixture
def october_and_november(organization, clock):
    provider, staff = OrganizationFactory(), UserFactory(is_staff=True)
    clock(2026, 10, 1, 0, 0, 5)  # just after midnight in Shanghai, still 30 September in UTC
    top_up = fund(organization, "500.00")
    clock(2026, 10, 12, 9)
    _spend(organization, provider, "80.00", "rental:1")
    _spend(organization, provider, "40.00", "rental:2")
    _spend(organization, provider, "0.005", "rental:2")
    clock(2026, 10, 31, 23, 59, 59)
    refund_request(top_up_id=top_up.pk, amount=Decimal("30.00"), reason="unused", requested_by=staff)
    clock(2026, 11, 3, 12)
    fund(organization, "100.00")
    return organization


def test_statement_sums_the_month_and_lists_charges_by_item(october_and_november, clock):
    # when
    clock(2026, 11, 23, 10)
    statement = statement_close(organization_id=october_and_november.pk, period_start=date(2026, 10, 1))
    # then
    assert (statement.number, statement.period_start, statement.period_end) == (1, date(2026, 10, 1), date(2026, 11, 1))
    figures = (statement.opening_balance, statement.top_ups, statement.charges, statement.refunds,
               statement.adjustments, statement.closing_balance)  # fmt: skip
    assert figures == (
        Decimal("0"),
        Decimal("500"),
        Decimal("120.005"),
        Decimal("30"),
        Decimal("0"),
        Decimal("349.995"),
    )
    assert statement.charge_lines == [
        {"reference": "rental:1", "description": "GPU time rental:1", "amount": "80.00000000"},
        {"reference": "rental:2", "description": "GPU time rental:2", "amount": "40.00500000"},
    ]


def test_next_month_opens_where_the_last_closed_and_numbers_follow(october_and_november, clock):
    clock(2026, 12, 1, 2)
    first = statement_close(organization_id=october_and_november.pk, period_start=date(2026, 10, 1))
    second = statement_close(organization_id=october_and_november.pk, period_start=date(2026, 11, 1))
    assert (second.number, second.opening_balance, second.closing_balance) == (
        2,
        first.closing_balance,
        Decimal("449.995"),
    )


def test_closing_a_closed_month_returns_its_statement(october_and_november, clock):
    clock(2026, 11, 23, 10)
    first = statement_close(organization_id=october_and_november.pk, period_start=date(2026, 10, 1))
    again = statement_close(organization_id=october_and_november.pk, period_start=date(2026, 10, 1))
    assert again.pk == first.pk
    assert Statement.objects.count() == 1


def test_a_month_not_over_cannot_be_closed(organization, clock):
    clock(2026, 11, 23, 10)
    with pytest.raises(Conflict) as refused:
        statement_close(organization_id=organization.pk, period_start=date(2026, 11, 1))
    assert refused.value.code == "period_open"
    assert not Statement.objects.exists()


def test_beat_closes_last_month_for_every_organization_with_funds(october_and_november, clock, monkeypatch):
    # given
    clock(2026, 11, 1, 2)
    fund(OrganizationFactory(), "10.00")
    OrganizationFactory()  # never had money: no statement
    sent = []
    monkeypatch.setattr(statement_close_task, "delay", lambda *args: sent.append(args))
    # when
    assert statement_close_due_task() == 2
    for args in sent + sent:  # the beat fired twice
        statement_close_task(*args)
    # then
    assert sorted(Statement.objects.values_list("number", "period_start")) == [(1, date(2026, 10, 1))] * 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_statement_close_run_twice_concurrently_produces_one_statement(require_postgres):
    # given
    organization = OrganizationFactory()
    fund(organization, "10.00")
    # when
    numbers = race(
        2, lambda _i: statement_close(organization_id=organization.pk, period_start=date(2026, 10, 1)).number
    )
    # then
    assert numbers == [1, 1]
    assert Statement.objects.filter(organization=organization).count() == 1


def test_statement_page_csv_and_api_round_half_up_at_the_boundary(
    october_and_november, clock, client, owner, api_client_for
):
    # given
    clock(2026, 11, 23, 10)
    statement = statement_close(organization_id=october_and_november.pk, period_start=date(2026, 10, 1))
    client.force_login(owner)
    # when
    page = client.get(f"/billing/statements/{statement.pk}/").content.decode()
    rows = list(csv.reader(io.StringIO(client.get(f"/billing/statements/{statement.pk}/csv/").content.decode())))
    body = api_client_for(october_and_november).get("/api/v1/statements/").json()
    # then
    assert "−120.01" in page and "349.995" not in page and "350.00" in page
    assert rows[0] == ["line", "reference", "amount"]
    assert ["charge: GPU time rental:2", "rental:2", "40.01"] in rows
    assert rows[-1] == ["closing_balance", "", "350.00"]
    assert [(s["number"], s["closing_balance"]) for s in body["results"]] == [(1, "349.99500000")]
    assert "#1" in client.get("/billing/statements/").content.decode()


def test_statement_of_another_organization_is_not_found(october_and_november, clock, client):
    clock(2026, 11, 23, 10)
    statement = statement_close(organization_id=october_and_november.pk, period_start=date(2026, 10, 1))
    outsider = MembershipFactory(organization=OrganizationFactory()).user
    client.force_login(outsider)
    assert client.get(f"/billing/statements/{statement.pk}/").status_code == 404
    assert client.get(f"/billing/statements/{statement.pk}/csv/").status_code == 404
