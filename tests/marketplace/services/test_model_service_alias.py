"""Staff approve which model services join their model's public alias; the approval is for one alias only."""

import io

import pytest
from django.core.management import call_command
from django.utils.timezone import now

from marketplace.models import ModelService
from marketplace.services import offerings as services
from tests.factories.accounts import MembershipFactory, UserFactory, staff_login
from tests.factories.marketplace import ModelServiceFactory, ProviderOrganizationFactory
from tests.marketplace.services.test_model_service_upstreams import FIELDS


def test_a_new_model_service_is_not_in_its_alias(db):
    # given
    provider = ProviderOrganizationFactory()
    actor = MembershipFactory(organization=provider).user
    # when
    created = services.model_service_create(
        provider=provider, actor=actor, upstream_base_url="https://8.8.8.8/v1", **FIELDS
    )
    # then
    created.refresh_from_db()
    assert (created.alias_approved, created.alias_approved_by) == (False, None)


def test_alias_approve_records_who_and_is_idempotent(db):
    # given
    service = ModelServiceFactory(alias_approved_at=None)
    staff, other = UserFactory(is_staff=True), UserFactory(is_staff=True)
    # when
    services.model_service_alias_approve(model_service_id=service.pk, actor=staff)
    first = ModelService.objects.get(pk=service.pk).alias_approved_at
    services.model_service_alias_approve(model_service_id=service.pk, actor=other)
    # then
    service.refresh_from_db()
    assert (service.alias_approved_at, service.alias_approved_by) == (first, staff)


def test_alias_revoke_takes_it_out(db):
    service = ModelServiceFactory(alias_approved_at=now())
    services.model_service_alias_revoke(model_service_id=service.pk, actor=UserFactory(is_staff=True))
    service.refresh_from_db()
    assert (service.alias_approved_at, service.alias_approved_by) == (None, None)


def test_changing_the_slug_leaves_the_alias(db):
    # given: a service approved for one alias
    service = ModelServiceFactory(slug="small-model", alias_approved_at=now())
    actor = MembershipFactory(organization=service.provider).user
    # when: its provider moves it to a popular model's slug
    services.model_service_update(model_service_id=service.pk, actor=actor, slug="popular-model")
    # then: it must be approved again for that one
    service.refresh_from_db()
    assert (service.slug, service.alias_approved_at) == ("popular-model", None)


@pytest.mark.parametrize(
    "change",
    [
        {"upstream_base_url": "https://cheap-small-model.example.com/v1"},
        {"model_family": "tiny"},
        {"precision": "int4"},
    ],
)
def test_swapping_what_answers_behind_an_approved_alias_leaves_the_alias(db, change):
    # given: a service staff approved for its alias; its provider then points it at something cheaper
    service = ModelServiceFactory(alias_approved_at=now())
    actor = MembershipFactory(organization=service.provider).user
    # when
    services.model_service_update(model_service_id=service.pk, actor=actor, **change)
    # then: the alias's callers are not sent to it until staff look again
    service.refresh_from_db()
    assert service.alias_approved_at is None


def test_other_changes_keep_the_approval(db):
    approved_at = now()
    service = ModelServiceFactory(alias_approved_at=approved_at)
    actor = MembershipFactory(organization=service.provider).user
    services.model_service_update(model_service_id=service.pk, actor=actor, name="Renamed")
    service.refresh_from_db()
    assert service.alias_approved_at == approved_at


def test_staff_approve_and_revoke_in_the_admin(client, admin_user):
    # given: a superuser signed in as the admin requires (two-factor)
    staff_login(client, admin_user)
    waiting, approved = ModelServiceFactory(alias_approved_at=None), ModelServiceFactory(alias_approved_at=now())
    url = "/admin/marketplace/modelservice/"
    # when
    approve = client.post(url, {"action": "approve_alias", "_selected_action": [waiting.pk]})
    revoke = client.post(url, {"action": "revoke_alias", "_selected_action": [approved.pk]})
    # then
    assert (approve.status_code, revoke.status_code) == (302, 302)
    waiting.refresh_from_db()
    approved.refresh_from_db()
    assert (waiting.alias_approved_by, approved.alias_approved_at) == (admin_user, None)


def test_the_demo_data_services_are_approved(db):
    call_command("seed_demo", stdout=io.StringIO())
    assert ModelService.objects.count() > 0
    assert ModelService.objects.filter(alias_approved_at__isnull=True).count() == 0
