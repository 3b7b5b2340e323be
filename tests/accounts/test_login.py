import re

import pytest
from django.test import override_settings

from tests.factories.accounts import PASSWORD, UserFactory


def page_without_varying_parts(response) -> str:
    """The page minus the typed address and the CSRF tokens, which differ on every response."""
    html = response.content.decode()
    html = html.replace("known@example.com", "").replace("nobody@example.com", "")
    return re.sub(r"[A-Za-z0-9]{64}", "", html)


def attempt(client, email: str, password: str):
    return client.post("/accounts/login/", {"email": email, "password": password}, HTTP_ACCEPT_LANGUAGE="en")


@override_settings(LOGIN_FAILURE_LIMIT=3)
@pytest.mark.parametrize("email_exists", [True, False], ids=["wrong-password", "unknown-user"])
def test_login_locks_after_n_failures_with_the_same_answer_for_unknown_users(db, client, email_exists):
    # given
    email = "known@example.com"
    if email_exists:
        UserFactory(email=email)
    # when
    failures = [attempt(client, email, "wrong-password") for _ in range(3)]
    locked = attempt(client, email, PASSWORD)
    # then
    assert [r.status_code for r in failures] == [200, 200, 200]
    assert all("incorrect" in r.content.decode() for r in failures)
    assert locked.status_code == 429
    assert locked["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session


@override_settings(LOGIN_FAILURE_LIMIT=3)
def test_wrong_password_and_unknown_user_get_identical_pages(db, client):
    UserFactory(email="known@example.com")
    wrong = attempt(client, "known@example.com", "nope")
    unknown = attempt(client, "nobody@example.com", "nope")
    assert wrong.status_code == unknown.status_code == 200
    assert page_without_varying_parts(wrong) == page_without_varying_parts(unknown)


def test_successful_login_resets_the_failure_count(db, client):
    user = UserFactory(email="ok@example.com")
    for _ in range(4):
        attempt(client, user.email, "wrong")
    assert attempt(client, user.email, PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        attempt(client, user.email, "wrong")
    assert attempt(client, user.email, PASSWORD).status_code == 302


@override_settings(LOGIN_FAILURE_LIMIT_PER_IP=4)
def test_one_client_spraying_many_addresses_is_locked_out(db, client):
    # given
    victim = UserFactory(email="victim@example.com")
    # when
    for n in range(4):
        attempt(client, f"guess{n}@example.com", "wrong")
    locked = attempt(client, victim.email, PASSWORD)
    # then
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
