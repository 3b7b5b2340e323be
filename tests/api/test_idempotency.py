import threading
from datetime import timedelta
from unittest.mock import patch

import pytest
from django.db import connection
from django.test import override_settings
from django.utils.timezone import now

from accounts import services
from accounts.models import ApiKey, IdempotencyRecord, Organization
from marketplace.core.idempotency import idempotency_purge
from tests.factories.accounts import MembershipFactory, OrganizationFactory, api_key_for


def post_org(client, key: str, name: str = "Research Lab"):
    return client.post("/api/v1/organizations/", {"name": name}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_same_key_same_body_replays_the_stored_response(organization, owner, api_client_for):
    # given
    client = api_client_for(organization, user=owner)
    first = post_org(client, "create-lab-1")
    # when
    second = post_org(client, "create-lab-1")
    # then
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Organization.objects.filter(name="Research Lab").count() == 1


def test_same_key_different_body_is_422_and_creates_nothing(organization, owner, api_client_for):
    # given
    client = api_client_for(organization, user=owner)
    post_org(client, "create-lab-2")
    # when
    response = post_org(client, "create-lab-2", name="Another Lab")
    # then
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert not Organization.objects.filter(name="Another Lab").exists()


def test_keys_are_per_organization(organization, owner, api_client_for):
    # given
    other = OrganizationFactory()
    MembershipFactory(organization=other)
    # when
    a = post_org(api_client_for(organization, user=owner), "shared-key")
    b = post_org(api_client_for(other), "shared-key", name="Other Lab")
    # then
    assert a.status_code == b.status_code == 201
    assert b.json()["name"] == "Other Lab"


def test_failed_request_frees_the_key_for_a_retry(organization, owner, api_client_for):
    # given
    client = api_client_for(organization, user=owner)
    rejected = post_org(client, "retry-me", name="   ")
    assert not IdempotencyRecord.objects.filter(key="retry-me").exists()
    # when: the client fixes the body and retries with the same key
    accepted = post_org(client, "retry-me", name="Fixed Lab")
    # then
    assert rejected.status_code == 400
    assert accepted.status_code == 201
    assert IdempotencyRecord.objects.get(key="retry-me").response_status == 201


def test_domain_error_frees_the_key(organization, owner, api_client_for):
    client = api_client_for(organization, user=owner)
    with patch.object(services, "organization_create", side_effect=services.Conflict("busy", code="busy")):
        assert post_org(client, "after-conflict").status_code == 409
    assert post_org(client, "after-conflict").status_code == 201


def test_api_key_replay_never_stores_or_returns_the_secret(organization, owner, api_client_for):
    # given
    client = api_client_for(organization, user=owner)
    body = {"name": "ci", "scopes": ["read"]}
    first = client.post("/api/v1/api-keys/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    # when
    replay = client.post("/api/v1/api-keys/", body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    # then
    assert first.json()["secret"].startswith("mk_live_")
    assert replay.status_code == 201
    assert replay.json()["secret"] is None
    assert replay.json()["id"] == first.json()["id"]
    assert IdempotencyRecord.objects.get(key="key-1").response_body["secret"] is None
    assert ApiKey.objects.filter(name="ci").count() == 1


@pytest.mark.parametrize("key", ["x" * 256, "key\x00", "key\x1b[0m", "\ud800"])
def test_an_overlong_key_or_one_with_unprintable_characters_is_rejected(organization, owner, api_client_for, key):
    # NUL, which no SQL text can hold, and a lone surrogate, which no encoding can write, would fail in the database
    response = post_org(api_client_for(organization, user=owner), key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert not IdempotencyRecord.objects.exists()


@override_settings(IDEMPOTENCY_KEY_TTL_HOURS=1)
def test_purge_drops_expired_records_only(organization, owner, api_client_for):
    client = api_client_for(organization, user=owner)
    post_org(client, "old")
    post_org(client, "new", name="New Lab")
    IdempotencyRecord.objects.filter(key="old").update(created_at=now() - timedelta(hours=2))
    assert idempotency_purge() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_same_key_in_flight_is_409_and_runs_once(require_postgres, api_client_for):
    # given
    organization = OrganizationFactory()
    owner = MembershipFactory(organization=organization).user
    _key, secret = api_key_for(organization, user=owner)
    started, release = threading.Event(), threading.Event()
    real_create = services.organization_create
    results = {}

    def slow_create(**kwargs):
        started.set()
        assert release.wait(10)
        return real_create(**kwargs)

    def first_request():
        from rest_framework.test import APIClient

        client = APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}")
        results["first"] = post_org(client, "in-flight")
        connection.close()

    # when
    with patch.object(services, "organization_create", side_effect=slow_create):
        worker = threading.Thread(target=first_request)
        worker.start()
        assert started.wait(10)
        from rest_framework.test import APIClient

        concurrent = post_org(APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}"), "in-flight")
        release.set()
        worker.join(10)
    # then
    assert concurrent.status_code == 409
    assert concurrent.json()["error"]["code"] == "idempotency_key_in_use"
    assert results["first"].status_code == 201
    assert Organization.objects.filter(name="Research Lab").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_parallel_requests_with_one_key_create_exactly_one_object(require_postgres):
    # given
    from rest_framework.test import APIClient

    organization = OrganizationFactory()
    owner = MembershipFactory(organization=organization).user
    _key, secret = api_key_for(organization, user=owner)
    barrier = threading.Barrier(8)
    statuses = []

    def request():
        client = APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}")
        barrier.wait(10)
        response = post_org(client, "stampede")
        statuses.append((response.status_code, response.get("Idempotent-Replayed")))
        connection.close()

    # when
    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    # then
    assert len(statuses) == 8
    assert Organization.objects.filter(name="Research Lab").count() == 1
    assert [s for s in statuses if s == (201, None)] == [(201, None)]
    assert {code for code, _replayed in statuses} <= {201, 409}
