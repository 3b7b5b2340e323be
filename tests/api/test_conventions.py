"""The API's shared conventions: one error shape, pagination, flat query counts."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership
from tests.factories.accounts import MembershipFactory, OrganizationFactory, api_key_for


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_unauthenticated_is_401_in_the_error_shape(db, client):
    assert_error(client.get("/api/v1/organizations/"), 401, "not_authenticated")


def test_validation_error_is_400_with_field_details(organization, owner, api_client_for):
    response = api_client_for(organization, user=owner).post(
        "/api/v1/api-keys/", {"name": "", "scopes": ["root"]}, format="json"
    )
    assert_error(response, 400, "invalid")
    assert set(response.json()["error"]["details"]["fields"]) == {"name", "scopes"}


@pytest.mark.parametrize(("slug", "shown"), [("h100\x00", "h100\\x00"), ("h100\ud800", "h100\\ud800")])
def test_a_reference_no_database_can_compare_is_refused_as_not_found_not_a_server_error(
    organization, owner, api_client_for, slug, shown
):
    # NUL in PostgreSQL text and a lone surrogate in any encoding make the lookup raise: the field refuses them first
    body = json.dumps({"accelerators": 1, "hours": 1, "accelerator": slug})  # ASCII: the surrogate escaped as JSON
    response = api_client_for(organization, user=owner).post(
        "/api/v1/placements/quote/", body, content_type="application/json", HTTP_ACCEPT_LANGUAGE="en"
    )
    assert_error(response, 400, "invalid")
    assert response.json()["error"]["details"]["fields"]["accelerator"] == [f"Object with slug={shown} does not exist."]


def test_unknown_object_is_404_in_the_error_shape(organization, owner, api_client_for):
    assert_error(api_client_for(organization, user=owner).get("/api/v1/api-keys/999999/"), 404, "not_found")


def test_unknown_api_path_is_404_json(db, client):
    assert_error(client.get("/api/v1/no-such-thing/"), 404, "not_found")


def test_method_not_allowed_is_405_in_the_error_shape(organization, owner, api_client_for):
    assert_error(api_client_for(organization, user=owner).delete("/api/v1/organizations/"), 405, "method_not_allowed")


def test_role_too_low_is_403(organization, api_client_for):
    member = MembershipFactory(organization=organization, role=Membership.Role.MEMBER).user
    response = api_client_for(organization, user=member).patch(
        f"/api/v1/organizations/{organization.pk}/", {"name": "X"}, format="json"
    )
    assert_error(response, 403, "role_required")


def test_lists_are_paginated(organization, owner, api_client_for):
    for _ in range(3):
        api_key_for(organization, user=owner)
    body = api_client_for(organization, user=owner).get("/api/v1/api-keys/?page_size=2").json()
    assert body["count"] == 4
    assert len(body["results"]) == 2
    assert body["next"].endswith("page=2&page_size=2")


@pytest.mark.parametrize(
    "path", ["/api/v1/api-keys/", "/api/v1/organizations/", "/api/v1/me/", "/api/v1/organizations/{org}/members/"]
)
def test_list_query_count_does_not_grow_with_rows(organization, owner, api_client_for, django_assert_num_queries, path):
    # given
    client = api_client_for(organization, user=owner)
    path = path.format(org=organization.pk)
    client.get(path)  # last_used_at is written on the first use of a key
    with CaptureQueriesContext(connection) as few:
        client.get(path)
    baseline = len(few.captured_queries)
    # when: many more rows of every kind
    for _ in range(15):
        api_key_for(organization, user=MembershipFactory(organization=organization, role=Membership.Role.MEMBER).user)
        MembershipFactory(user=owner, organization=OrganizationFactory())
    # then
    with django_assert_num_queries(baseline):
        response = client.get(path)
    assert response.status_code == 200


def test_me_describes_the_key_organization_only(organization, owner, api_client_for):
    other = OrganizationFactory(name="Elsewhere")
    MembershipFactory(user=owner, organization=other)
    body = api_client_for(organization, user=owner).get("/api/v1/me/").json()
    assert body["email"] == owner.email
    assert body["active_organization"]["id"] == organization.pk
    assert [m["organization"]["id"] for m in body["memberships"]] == [organization.pk]


def test_invitation_and_provider_application_through_the_api(organization, owner, api_client_for):
    client = api_client_for(organization, user=owner)
    invited = client.post(
        f"/api/v1/organizations/{organization.pk}/invitations/",
        {"email": "new@example.com", "role": "billing"},
        format="json",
    )
    applied = client.post(
        f"/api/v1/organizations/{organization.pk}/provider-application/",
        {"legal_name": "Acme", "contact_name": "Li", "contact_email": "ops@acme.cn", "regions": ["ningxia"]},
        format="json",
    )
    assert invited.status_code == 201 and invited.json()["role"] == "billing"
    assert applied.status_code == 201 and applied.json()["status"] == "pending"
    assert client.get(f"/api/v1/organizations/{organization.pk}/").json()["provider_status"] == "pending"


def test_browser_session_reaches_the_api_with_its_active_organization(organization, owner, client):
    # given
    client.force_login(owner)
    # when
    me = client.get("/api/v1/me/")
    keys = client.get("/api/v1/api-keys/")
    # then
    assert me.status_code == 200
    assert me.json()["active_organization"]["id"] == organization.pk
    assert keys.status_code == 200


def test_browser_session_writes_need_the_csrf_token(organization, owner):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post("/api/v1/organizations/", {"name": "No token"}, content_type="application/json")
    assert_error(response, 403, "permission_denied")


def test_members_roles_and_invitations_are_managed_through_the_api(organization, owner, api_client_for):
    # given
    client = api_client_for(organization, user=owner)
    member = MembershipFactory(organization=organization, role=Membership.Role.MEMBER)
    invited = client.post(
        f"/api/v1/organizations/{organization.pk}/invitations/", {"email": "x@example.com"}, format="json"
    ).json()
    # when
    promoted = client.patch(
        f"/api/v1/organizations/{organization.pk}/members/{member.pk}/", {"role": "admin"}, format="json"
    )
    revoked = client.delete(f"/api/v1/organizations/{organization.pk}/invitations/{invited['id']}/")
    removed = client.delete(f"/api/v1/organizations/{organization.pk}/members/{member.pk}/")
    # then
    assert promoted.json()["role"] == "admin"
    assert revoked.status_code == removed.status_code == 204
    assert client.get(f"/api/v1/organizations/{organization.pk}/invitations/").json()["count"] == 0
    assert not Membership.objects.filter(pk=member.pk).exists()


def test_read_only_serializers_build_fields_once_per_class_each_its_own(db):
    from marketplace.api.serializers import RentalDetailSerializer, RentalSerializer

    # given: the parent built first, then the subclass (which adds the timeline), then each again
    first, detail, again = RentalSerializer(), RentalDetailSerializer(), RentalSerializer()
    # then: each class keeps its own fields, and every instance gets fields of its own
    assert "transitions" not in first.fields and "transitions" in detail.fields
    assert list(again.fields) == list(first.fields)
    assert again.fields["status"] is not first.fields["status"]
    assert again.fields["status"].parent is again
    assert first.fields["status"].parent is first and first.fields["status"].field_name == "status"
    # a nested serializer is copied with its own fields, bound to the copy
    other_detail = RentalDetailSerializer()
    timeline, other_timeline = detail.fields["transitions"], other_detail.fields["transitions"]
    assert other_timeline is not timeline and other_timeline.child is not timeline.child
    assert other_timeline.child.parent is other_timeline and other_timeline.parent is other_detail
    assert other_timeline.child.fields["to_status"] is not timeline.child.fields["to_status"]


def test_an_input_serializer_built_once_validates_each_request_on_its_own(db):
    from django.utils import translation

    from marketplace.api.serializers import RentalCreateSerializer

    first = RentalCreateSerializer(data={"offering": 0, "accelerators": 1})
    second = RentalCreateSerializer(data={"offering": 3, "accelerators": 2})
    assert not first.is_valid() and second.is_valid()
    assert first.errors["offering"][0].code == "min_value" and second.validated_data["offering"] == 3
    assert first.fields["offering"] is not second.fields["offering"]
    # the messages are still translated per request
    with translation.override("en"):
        english = RentalCreateSerializer(data={"offering": 1, "accelerators": 0})
        assert not english.is_valid()
        assert "greater than or equal to 1" in str(english.errors["accelerators"][0])
