import pytest

from accounts.models import ApiKey
from marketplace.core.queries import PreparedQuery
from marketplace.settings import PREPARE_ONLY_WHEN_ASKED, database_from_url
from tests.factories.accounts import OrganizationFactory, api_key_for


def test_prepared_query_binds_new_values_and_loads_related_objects(db, django_assert_num_queries):
    # given
    first, _secret = api_key_for(OrganizationFactory(name="One"))
    second, _secret = api_key_for(OrganizationFactory(name="Two"))
    by_prefix = PreparedQuery(
        lambda prefix: ApiKey.objects.select_related("organization", "created_by").filter(prefix=prefix), "prefix"
    )
    # when / then: one query per run, the related objects come with it
    for key, name in ((first, "One"), (second, "Two"), (first, "One")):
        with django_assert_num_queries(1):
            (found,) = by_prefix.run(prefix=key.prefix)
            assert (found.pk, found.organization.name, found.created_by.email) == (
                key.pk, name, key.created_by.email,
            )  # fmt: skip
            # the columns' converters ran: a JSON list and an aware datetime, as the ORM loads them
            assert (found.scopes, found.created_at) == (key.scopes, key.created_at)
    assert by_prefix.run(prefix="nothing") == []


def test_prepared_query_refuses_a_parameter_that_does_not_reach_the_sql(db):
    prepared = PreparedQuery(lambda name: ApiKey.objects.filter(name__icontains=name), "name")
    with pytest.raises(ValueError, match="does not reach the SQL unchanged"):
        prepared.run(name="x")


def test_a_statement_run_prepared_is_prepared_on_the_server(require_postgres):
    # Django turns psycopg's preparing off unless the settings turn it back on: then `prepare=True` is ignored and
    # the statement is planned on every run.
    from django.db import connection

    from marketplace.core.queries import run_prepared

    text = "SELECT %s::int + 1 AS prepared_probe"
    assert run_prepared(text, [41]) == [(42,)]
    assert run_prepared(text, [1]) == [(2,)]
    (prepared,) = run_prepared(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%prepared_probe%"]
    )
    assert prepared == (1,)
    # the ORM's statements are not prepared by the way (their texts carry their values)
    with connection.cursor() as cursor:
        for _ in range(10):
            cursor.execute("SELECT 1 AS unprepared_probe")
    assert run_prepared("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%unprepared%"]) == [
        (0,)
    ]


@pytest.mark.parametrize(
    ("query", "threshold"),
    [("", PREPARE_ONLY_WHEN_ASKED), ("?prepare_threshold=none", None), ("?prepare_threshold=5", 5)],
)
def test_database_url_sets_when_statements_are_prepared(query, threshold):
    options = database_from_url(f"postgres://app@db.internal:5432/market{query}")["OPTIONS"]
    assert options["prepare_threshold"] == threshold
