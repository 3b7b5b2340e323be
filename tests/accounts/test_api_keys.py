import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.utils.timezone import now

from accounts import services
from accounts.models import ApiKey, Membership
from tests.factories.accounts import MembershipFactory, api_key_for


def all_database_text() -> str:
    """Every row of every table, as text: a plain secret anywhere in the database shows up here."""
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            dump.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(dump)


def test_api_key_secret_is_never_stored_or_logged(organization, owner, caplog, client):
    # given
    caplog.set_level(logging.DEBUG)
    client.force_login(owner)
    # when: created through the page and through the API
    page = client.post("/accounts/api-keys/", {"name": "ci", "scopes": ["read"]})
    _key, api_secret = api_key_for(organization, user=owner)
    # then
    page_secret = page.context["created"]["secret"]
    secret_parts = [page_secret.split("_", 3)[3], api_secret.split("_", 3)[3]]
    database = all_database_text()
    logs = caplog.text
    for secret in secret_parts:
        assert secret not in database
        assert secret not in logs
    assert ApiKey.objects.filter(organization=organization).count() == 2


def test_api_key_format_and_hash(organization, owner):
    api_key, secret = services.api_key_create(organization=organization, created_by=owner, name="k", scopes=["read"])
    assert secret.startswith(f"mk_live_{api_key.prefix}_")
    assert api_key.secret_hash == services.api_key_hash(secret.split("_", 3)[3])
    assert len(api_key.secret_hash) == 64


@pytest.mark.parametrize(
    "break_key",
    [
        pytest.param(lambda key: ApiKey.objects.filter(pk=key.pk).update(revoked_at=now()), id="revoked"),
        pytest.param(
            lambda key: ApiKey.objects.filter(pk=key.pk).update(expires_at=now() - timedelta(seconds=1)), id="expired"
        ),
    ],
)
def test_revoked_or_expired_key_gets_401(organization, owner, break_key, client):
    # given
    api_key, secret = api_key_for(organization, user=owner)
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
    # when
    break_key(api_key)
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    # then
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "header",
    ["Bearer mk_live_abc_def", "Bearer nonsense", "Bearer mk_test_x_y", "Bearer ", "Bearer a b"],
)
def test_malformed_or_unknown_key_gets_401(db, client, header):
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_wrong_secret_for_a_real_key_id_gets_401(organization, owner, client):
    api_key, _secret = api_key_for(organization, user=owner)
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer mk_live_{api_key.prefix}_wrongsecret")
    assert response.status_code == 401


def test_key_without_read_scope_gets_403_on_reads(organization, owner, api_client_for):
    client = api_client_for(organization, user=owner, scopes=["gateway"])
    response = client.get("/api/v1/api-keys/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_required"


def test_key_cannot_create_a_key_with_scopes_it_lacks(organization, owner, api_client_for):
    # given
    client = api_client_for(organization, user=owner, scopes=["read", "admin"])
    # when
    response = client.post("/api/v1/api-keys/", {"name": "escalate", "scopes": ["read", "rent"]}, format="json")
    # then
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_escalation"
    assert ApiKey.objects.filter(organization=organization).count() == 1


def test_a_leaked_key_cannot_mint_a_key_that_outlives_it_or_spends_more(organization, owner, api_client_for):
    # given: a key that expires tomorrow and may spend ¥50 a month
    tomorrow = now() + timedelta(days=1)
    granting, secret = api_key_for(organization, user=owner, expires_at=tomorrow)
    ApiKey.objects.filter(pk=granting.pk).update(monthly_spend_limit="50.00")
    client = api_client_for(organization, user=owner)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    # when: it makes a key that never expires, then one that expires with it
    forever = client.post("/api/v1/api-keys/", {"name": "forever", "scopes": ["gateway"]}, format="json")
    bounded = client.post(
        "/api/v1/api-keys/",
        {"name": "bounded", "scopes": ["gateway"], "expires_at": tomorrow.isoformat()},
        format="json",
    )
    # then: the first is refused; the second spends no more than the key that made it
    assert (forever.status_code, forever.json()["error"]["code"]) == (403, "expiry_escalation")
    assert bounded.status_code == 201
    assert str(ApiKey.objects.get(pk=bounded.json()["id"]).monthly_spend_limit) == "50.00000000"


def test_api_key_create_shows_secret_once_and_lists_without_it(organization, owner, api_client_for):
    # given
    client = api_client_for(organization, user=owner)
    # when
    created = client.post("/api/v1/api-keys/", {"name": "deploy", "scopes": ["read", "gateway"]}, format="json")
    listed = client.get(f"/api/v1/api-keys/{created.json()['id']}/")
    # then
    assert created.status_code == 201
    assert created.json()["secret"].startswith("mk_live_")
    assert created.json()["scopes"] == ["gateway", "read"]
    assert "secret" not in listed.json()
    assert listed.json()["masked"].endswith("_…")


def test_revoke_through_api_then_the_key_stops_working(organization, owner, api_client_for):
    # given
    api_key, secret = api_key_for(organization, user=owner)
    client = api_client_for(organization, user=owner)
    # when
    response = client.post(f"/api/v1/api-keys/{api_key.pk}/revoke/")
    # then
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/me/").status_code == 401


def test_member_cannot_revoke_someone_elses_key(organization, owner, api_client_for):
    # given
    owners_key, _secret = api_key_for(organization, user=owner)
    member = MembershipFactory(organization=organization, role=Membership.Role.MEMBER).user
    # when
    response = api_client_for(organization, user=member).post(f"/api/v1/api-keys/{owners_key.pk}/revoke/")
    # then
    assert response.status_code == 403
    owners_key.refresh_from_db()
    assert owners_key.revoked_at is None


def test_billing_member_cannot_create_keys(organization):
    billing = MembershipFactory(organization=organization, role=Membership.Role.BILLING).user
    with pytest.raises(services.PermissionDenied):
        services.api_key_create(organization=organization, created_by=billing, name="k", scopes=["read"])


def test_last_used_is_recorded_at_most_once_a_minute(organization, owner, client):
    # given
    api_key, secret = api_key_for(organization, user=owner)
    # when
    client.get("/api/v1/api-keys/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    api_key.refresh_from_db()
    first_use = api_key.last_used_at
    client.get("/api/v1/api-keys/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    api_key.refresh_from_db()
    # then
    assert first_use is not None
    assert api_key.last_used_at == first_use
