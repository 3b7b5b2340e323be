import pytest

from accounts.models import Notification, Organization
from marketplace.core.guarded import GuardedStatement
from tests.factories.accounts import OrganizationFactory


@pytest.fixture
def organization(require_postgres):
    return OrganizationFactory(name="Guarded")


def statement_for(organization: Organization, *, first_name: str, second_name: str) -> GuardedStatement:
    """Two checks on the organization's name, then a notification insert and a rename."""
    statement = GuardedStatement()
    statement.check("first", "SELECT id FROM accounts_organization WHERE id = %s AND name = %s AND {guard} FOR UPDATE",
                    [organization.pk, first_name])  # fmt: skip
    statement.check("second", "SELECT id FROM accounts_organization WHERE id = %s AND name = %s AND {guard}",
                    [organization.pk, second_name])  # fmt: skip
    statement.insert("note", Notification(organization=organization, kind="test", title="written"), returning="id")
    statement.write("rename", "UPDATE accounts_organization SET name = %s WHERE id = %s AND {guard}",
                    ["Renamed", organization.pk])  # fmt: skip
    statement.result("note_id", "(SELECT id FROM note)")
    return statement


def test_every_write_happens_when_every_check_passes(organization):
    failed, results = statement_for(organization, first_name="Guarded", second_name="Guarded").execute()

    assert failed is None
    note = Notification.objects.get(organization=organization)
    assert (results["note_id"], note.title) == (note.pk, "written")
    organization.refresh_from_db()
    assert organization.name == "Renamed"


@pytest.mark.parametrize(("first_name", "second_name", "failing"), [("Other", "Guarded", "first"),
                                                                     ("Guarded", "Other", "second")])  # fmt: skip
def test_a_failed_check_writes_nothing_and_is_named(organization, first_name, second_name, failing):
    failed, results = statement_for(organization, first_name=first_name, second_name=second_name).execute()

    assert (failed, results["note_id"]) == (failing, None)
    assert not Notification.objects.filter(organization=organization).exists()
    organization.refresh_from_db()
    assert organization.name == "Guarded"


def test_a_check_runs_only_when_the_ones_before_it_passed(organization):
    # the second check divides by zero on the row it reads: it must never read it once the first has failed
    statement = GuardedStatement()
    statement.check("first", "SELECT id FROM accounts_organization WHERE id = %s AND name = '' AND {guard}",
                    [organization.pk])  # fmt: skip
    statement.check("second", "SELECT id / (id - id) AS id FROM accounts_organization WHERE id = %s AND {guard}",
                    [organization.pk])  # fmt: skip

    assert statement.execute() == ("first", {})


def test_a_literal_percent_sign_survives_the_placeholders(organization):
    # given: a statement whose SQL holds a literal % (written %%) between two parameters
    statement = GuardedStatement()
    statement.check("named", "SELECT id FROM accounts_organization WHERE id = %s AND name LIKE 'Guard%%' AND {guard}",
                    [organization.pk])  # fmt: skip
    statement.write("rename", "UPDATE accounts_organization SET name = %s || '%%' WHERE id = %s AND {guard}",
                    ["Renamed", organization.pk])  # fmt: skip
    # when
    failed, _results = statement.execute()
    # then
    assert failed is None
    organization.refresh_from_db()
    assert organization.name == "Renamed%"
