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


class Clock:
    """The cache backends read time.time(); the test moves it instead of sleeping."""

    def __init__(self, start: float) -> None:
        self.moment = start

    def __call__(self) -> float:
        return self.moment


@pytest.fixture
def clock(monkeypatch):
    import time

    fake = Clock(time.time())
    monkeypatch.setattr(time, "time", fake)
    return fake


CACHES_UNDER_TEST = {
    "file": lambda tmp_path: {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(tmp_path),
    },
    "locmem": lambda tmp_path: {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "lockout"},
}


@pytest.mark.parametrize("backend", sorted(CACHES_UNDER_TEST))
@pytest.mark.parametrize("gaps", [[0, 0, 0], [0, 600, 200]], ids=["together", "spread-over-800s"])
def test_lockout_lasts_exactly_login_lockout_seconds_from_the_locking_failure(
    db, client, clock, tmp_path, backend, gaps
):
    # given: the last of three failures locks the address
    user = UserFactory(email="known@example.com")
    with override_settings(
        CACHES={"default": CACHES_UNDER_TEST[backend](tmp_path)}, LOGIN_FAILURE_LIMIT=3, LOGIN_LOCKOUT_SECONDS=900
    ):
        for gap in gaps:
            clock.moment += gap
            assert attempt(client, user.email, "wrong").status_code == 200
        # when: the right password just before and just after the lockout ends
        clock.moment += 899
        still_locked = attempt(client, user.email, PASSWORD)
        clock.moment += 2
        unlocked = attempt(client, user.email, PASSWORD)
    # then
    assert still_locked.status_code == 429
    assert still_locked["Retry-After"] == "1"
    assert unlocked.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


def admin_attempt(client, email: str, password: str):
    # Either form's field names: Django's admin form says "username", the sign-in page says "email".
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": email, "email": email, "password": password},
        HTTP_ACCEPT_LANGUAGE="en",
    )


@override_settings(STAFF_REQUIRE_TWO_FACTOR=False)
def test_admin_login_has_the_same_lockout_as_the_sign_in_page(db, client):
    # given: 30 wrong passwords for a staff account at the admin's door
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    for _ in range(30):
        admin_attempt(client, staff.email, "wrong")
    # when: the right one
    response = admin_attempt(client, staff.email, PASSWORD)
    # then
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302


@override_settings(LOGIN_FAILURE_LIMIT=3, STAFF_REQUIRE_TWO_FACTOR=False)
def test_failures_at_the_sign_in_page_lock_the_admin_login_too(db, client):
    # given
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    for _ in range(3):
        attempt(client, staff.email, "wrong")
    # when
    response = admin_attempt(client, staff.email, PASSWORD)
    # then
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


@override_settings(STAFF_REQUIRE_TWO_FACTOR=False)
def test_admin_login_with_the_right_password_opens_the_admin(db, client):
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    response = admin_attempt(client, staff.email, PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
