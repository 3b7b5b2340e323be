import time
from datetime import UTC, datetime

import pytest
from django.test import override_settings
from django.utils import timezone
from django.utils.html import escape
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.factories.accounts import PASSWORD, TOTPDeviceFactory, UserFactory


@pytest.fixture
def clock(monkeypatch):
    """TOTP codes and django-otp's replay guard follow time.time(), its slow-down after wrong codes
    django.utils.timezone.now(): tests step both, 30 s at a time, instead of sleeping."""
    moment = [time.time()]
    monkeypatch.setattr(time, "time", lambda: moment[0])
    monkeypatch.setattr(timezone, "now", lambda: datetime.fromtimestamp(moment[0], tz=UTC))
    return moment


def code(device: TOTPDevice, moment: float) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = moment
    return f"{totp.token():06d}"


def sign_in(client, email: str, password: str = PASSWORD, next_url: str = ""):
    suffix = f"?next={next_url}" if next_url else ""
    return client.post(f"/accounts/login/{suffix}", {"email": email, "password": password}, HTTP_ACCEPT_LANGUAGE="en")


def verify(client, token: str, next_url: str = ""):
    suffix = f"?next={next_url}" if next_url else ""
    return client.post(f"/accounts/login/verify/{suffix}", {"token": token}, HTTP_ACCEPT_LANGUAGE="en")


def test_user_enrols_a_totp_device_and_sign_in_then_asks_for_its_code(db, client, clock):
    # given: a signed-in user shown the secret, who confirms it with a code
    user = UserFactory(email="two@example.com")
    client.force_login(user)
    page = client.get("/accounts/two-factor/")
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    assert page.status_code == 200
    assert escape(device.config_url) in page.content.decode()
    assert "<svg" in page.content.decode()
    confirmed = client.post("/accounts/two-factor/", {"token": code(device, clock[0])})
    assert confirmed.status_code == 302
    assert TOTPDevice.objects.get(user=user).confirmed
    client.logout()
    # when: signing in again, with the password, then a wrong code, then the right one
    clock[0] += 30
    password_step = sign_in(client, user.email, next_url="/accounts/profile/")
    after_password = dict(client.session)
    wrong = verify(client, "000000" if code(device, clock[0]) != "000000" else "111111", "/accounts/profile/")
    clock[0] += 30  # past django-otp's slow-down after a wrong code
    right = verify(client, code(device, clock[0]), "/accounts/profile/")
    # then
    assert password_step.status_code == 302
    assert password_step["Location"] == "/accounts/login/verify/?next=%2Faccounts%2Fprofile%2F"
    assert "_auth_user_id" not in after_password
    assert wrong.status_code == 200
    assert "That code is not valid" in wrong.content.decode()
    assert right.status_code == 302
    assert right["Location"] == "/accounts/profile/"
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.session["otp_device_id"] == device.persistent_id


def test_a_code_already_used_is_refused(db, client, clock):
    # given
    device = TOTPDeviceFactory(user=UserFactory(email="two@example.com"))
    token = code(device, clock[0])
    sign_in(client, "two@example.com")
    assert verify(client, token).status_code == 302
    client.logout()
    # when: the same code again, in the same 30 s
    sign_in(client, "two@example.com")
    replayed = verify(client, token)
    # then
    assert replayed.status_code == 200
    assert "_auth_user_id" not in client.session


@override_settings(LOGIN_FAILURE_LIMIT=3)
def test_wrong_codes_count_towards_the_sign_in_lockout(db, client, clock):
    # given: the right password, then three wrong codes (a minute apart, past django-otp's own slow-down)
    device = TOTPDeviceFactory(user=UserFactory(email="two@example.com"))
    sign_in(client, "two@example.com")
    for _ in range(3):
        clock[0] += 60
        assert verify(client, "999999" if code(device, clock[0]) != "999999" else "888888").status_code == 200
    # when
    clock[0] += 60
    locked = verify(client, code(device, clock[0]))
    # then
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_turning_two_factor_off_needs_a_current_code(db, client, clock):
    # given
    user = UserFactory()
    device = TOTPDeviceFactory(user=user)
    client.force_login(user)
    # when
    refused = client.post("/accounts/two-factor/", {"token": "12345"}, HTTP_ACCEPT_LANGUAGE="en")
    clock[0] += 60  # past django-otp's slow-down after a wrong code
    turned_off = client.post("/accounts/two-factor/", {"token": code(device, clock[0])})
    # then
    assert refused.status_code == 200
    assert "That code is not valid" in refused.content.decode()
    assert turned_off.status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()


@override_settings(STAFF_REQUIRE_TWO_FACTOR=True)
def test_staff_without_a_device_are_sent_to_enrol_before_the_admin_opens(db, client, clock):
    # given: staff signed in with a password only
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    sign_in(client, staff.email)
    # when
    admin = client.get("/admin/", follow=True)
    # then
    assert admin.redirect_chain[-1] == ("/accounts/two-factor/?next=%2Fadmin%2F", 302)
    # and when: they enrol, the admin opens
    device = TOTPDevice.objects.get(user=staff, confirmed=False)
    enrolled = client.post("/accounts/two-factor/?next=/admin/", {"token": code(device, clock[0])})
    assert enrolled["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


@override_settings(STAFF_REQUIRE_TWO_FACTOR=True)
def test_staff_with_a_device_give_the_code_before_the_admin_opens(db, client, clock):
    # given
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    device = TOTPDeviceFactory(user=staff)
    # when: the admin's login page, with the password and then the code
    password_step = client.post(
        "/admin/login/?next=/admin/", {"email": staff.email, "password": PASSWORD}, HTTP_ACCEPT_LANGUAGE="en"
    )
    before_code = client.get("/admin/")
    code_step = verify(client, code(device, clock[0]), "/admin/")
    # then
    assert password_step["Location"] == "/accounts/login/verify/?next=%2Fadmin%2F"
    assert before_code.status_code == 302
    assert code_step["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


@override_settings(STAFF_REQUIRE_TWO_FACTOR=True)
def test_a_staff_session_that_skipped_the_code_is_sent_to_give_it(db, client):
    # given: a password-only session of staff who have a device (signed in before the rule was on)
    staff = UserFactory(is_staff=True, is_superuser=True)
    TOTPDeviceFactory(user=staff)
    client.force_login(staff)
    # when
    admin = client.get("/admin/", follow=True)
    # then
    assert admin.redirect_chain[-1] == ("/accounts/login/verify/?next=%2Fadmin%2F", 302)


@override_settings(STAFF_REQUIRE_TWO_FACTOR=False)
def test_with_the_setting_off_staff_open_the_admin_with_a_password(db, client):
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    sign_in(client, staff.email)
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize(("debug", "required"), [("1", False), ("", True)])
def test_staff_two_factor_is_required_by_default_outside_debug(monkeypatch, debug, required):
    import subprocess
    import sys

    env = {"DJANGO_DEBUG": debug, "DJANGO_SETTINGS_MODULE": "marketplace.settings"}
    script = "import django; django.setup(); from django.conf import settings; print(settings.STAFF_REQUIRE_TWO_FACTOR)"
    import os

    output = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == str(required)
