"""Account pages through Django's test client (the browser flow is in tests/browser/)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import services
from accounts.models import ApiKey, Invitation, Membership, Organization, User
from tests.factories.accounts import (
    PASSWORD,
    MembershipFactory,
    ProviderProfileFactory,
    UserFactory,
    api_key_for,
    staff_login,
)


def test_sign_up_page_creates_user_and_logs_in(db, client):
    response = client.post(
        "/accounts/signup/", {"email": "new@example.com", "full_name": "New", "password": "a-very-good-passphrase"}
    )
    assert response.status_code == 302
    user = User.objects.get(email="new@example.com")
    assert client.session["_auth_user_id"] == str(user.pk)
    assert Membership.objects.get(user=user).organization.is_personal


def test_sign_up_rejects_weak_password_and_creates_nothing(db, client):
    response = client.post("/accounts/signup/", {"email": "new@example.com", "password": "123"})
    assert response.status_code == 200
    assert response.context["form"].errors["password"]
    assert not User.objects.exists()


def test_create_organization_makes_it_active(db, client):
    user = UserFactory()
    MembershipFactory(user=user)
    client.force_login(user)
    response = client.post("/accounts/organizations/", {"name": "Lab 实验室"})
    organization = Organization.objects.get(name="Lab 实验室")
    assert response.status_code == 302
    assert client.session["organization_id"] == organization.pk
    page = client.get("/accounts/api-keys/")
    assert page.context["request"].organization == organization


def test_switching_to_a_foreign_organization_is_404(db, client):
    user = MembershipFactory().user
    stranger_org = MembershipFactory().organization
    client.force_login(user)
    assert client.post("/accounts/organizations/switch/", {"organization": stranger_org.pk}).status_code == 404


def test_api_key_page_shows_secret_once(db, client):
    membership = MembershipFactory()
    client.force_login(membership.user)
    created = client.post(
        "/accounts/api-keys/", {"name": "laptop", "scopes": ["read", "gateway"]}, HTTP_HX_REQUEST="true"
    )
    secret = created.context["created"]["secret"]
    assert secret in created.content.decode()
    assert [t.name for t in created.templates][0] == "accounts/partials/_api_keys.html"
    again = client.get("/accounts/api-keys/")
    assert secret not in again.content.decode()
    assert ApiKey.objects.get(name="laptop").prefix in again.content.decode()


def test_invite_and_accept_through_pages(db, client):
    # given
    owner = MembershipFactory().user
    organization = owner.organizations.get()
    client.force_login(owner)
    page = client.post(f"/accounts/organizations/{organization.pk}/", {"email": "bob@example.com", "role": "member"})
    link = page.context["invite_link"]
    bob = UserFactory(email="bob@example.com")
    client.force_login(bob)
    # when
    response = client.post(link)
    # then
    assert response.status_code == 302
    assert Membership.objects.filter(user=bob, organization=organization, role="member").exists()
    assert Invitation.objects.get().accepted_by == bob


def test_provider_console_requires_an_approved_provider(db, client):
    membership = MembershipFactory()
    client.force_login(membership.user)
    assert client.get("/console/").url == "/accounts/provider/apply/"
    ProviderProfileFactory(organization=membership.organization)
    response = client.get("/console/")
    assert response.status_code == 200


def test_provider_application_page_submits(db, client):
    membership = MembershipFactory()
    client.force_login(membership.user)
    client.post(
        "/accounts/provider/apply/",
        {"legal_name": "Acme", "contact_name": "Li", "contact_email": "ops@acme.cn", "regions": ["guizhou", "gansu"]},
    )
    assert membership.organization.provider_profile.regions == ["guizhou", "gansu"]
    page = client.get("/accounts/provider/apply/")
    assert page.context["can_apply"] is False


def test_pages_render_for_a_signed_in_user(db, client):
    membership = MembershipFactory()
    client.force_login(membership.user)
    for path in [
        "/",
        "/accounts/profile/",
        "/accounts/organizations/",
        f"/accounts/organizations/{membership.organization_id}/",
        "/accounts/provider/apply/",
        "/accounts/api-keys/",
        "/accounts/password-reset/",
        "/api/docs/",
    ]:
        assert client.get(path).status_code == 200, path


def test_language_switcher_changes_the_interface(db, client):
    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    english = client.get("/").content.decode()
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    chinese = client.get("/").content.decode()
    assert "Sign in" in english
    assert "登录" in chinese


def test_password_reset_sends_a_link_by_email(db, client, mailoutbox):
    UserFactory(email="forgot@example.com")
    client.post("/accounts/password-reset/", {"email": "forgot@example.com"})
    assert len(mailoutbox) == 1
    assert "/accounts/password-reset/" in mailoutbox[0].body


def test_the_last_active_organization_is_remembered_at_the_next_sign_in(db, client):
    # given
    user = MembershipFactory().user
    team = MembershipFactory(user=user, organization__name="Team").organization
    client.force_login(user)
    client.post("/accounts/organizations/switch/", {"organization": team.pk})
    client.logout()
    # when
    client.force_login(user)
    page = client.get("/accounts/api-keys/")
    # then
    assert page.context["request"].organization == team


def test_password_change_keeps_the_user_signed_in(db, client):
    user = MembershipFactory().user
    client.force_login(user)
    response = client.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": "a-new-long-passphrase", "new_password2": "a-new-long-passphrase"},
    )
    assert response.url == "/accounts/password/done/"
    user.refresh_from_db()
    assert user.check_password("a-new-long-passphrase")
    assert client.get("/accounts/profile/").status_code == 200


def test_staff_approve_a_provider_in_the_admin(db, client):
    # given
    staff = UserFactory(is_staff=True, is_superuser=True)
    profile = ProviderProfileFactory(status="pending")
    staff_login(client, staff)
    # when
    response = client.post(
        "/admin/accounts/providerprofile/", {"action": "approve", "_selected_action": [profile.pk]}, follow=True
    )
    # then
    profile.refresh_from_db()
    assert response.status_code == 200
    assert profile.status == "approved"
    assert profile.reviewed_by == staff
    assert profile.organization.is_approved_provider


def test_staff_reject_a_provider_in_the_admin(db, client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    profile = ProviderProfileFactory(status="pending")
    staff_login(client, staff)
    client.post("/admin/accounts/providerprofile/", {"action": "reject", "_selected_action": [profile.pk]})
    profile.refresh_from_db()
    assert profile.status == "rejected"


@pytest.mark.parametrize(
    "path", ["/accounts/organizations/", "/accounts/api-keys/", "/accounts/organizations/{org}/", "/"]
)
def test_list_page_query_count_does_not_grow_with_rows(db, client, path):
    # given
    membership = MembershipFactory()
    client.force_login(membership.user)
    path = path.format(org=membership.organization_id)
    with CaptureQueriesContext(connection) as few:
        assert client.get(path).status_code == 200
    # when
    for _ in range(12):
        other = MembershipFactory(organization=membership.organization, role="member").user
        api_key_for(membership.organization, user=other)
        MembershipFactory(user=membership.user)
        services.invitation_create(
            organization=membership.organization, email=f"{other.pk}@x.cn", role="member", invited_by=membership.user
        )
    # then
    with CaptureQueriesContext(connection) as many:
        assert client.get(path).status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)
