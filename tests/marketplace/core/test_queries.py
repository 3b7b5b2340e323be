import pytest

from accounts.models import ApiKey
from marketplace.core.queries import PreparedQuery
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
