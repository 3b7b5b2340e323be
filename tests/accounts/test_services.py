import pytest
from django.core import mail

from accounts import services
from accounts.models import ApiKey, Invitation, Membership, Organization, ProviderProfile
from marketplace.core.errors import Conflict, DomainError, NotFound, PermissionDenied
from tests.factories.accounts import MembershipFactory, UserFactory, api_key_for


def test_sign_up_creates_a_personal_organization_owned_by_the_user(db):
    user = services.user_sign_up(email=" Ada@Example.COM ", password="x-long-passphrase-1", full_name="Ada")
    membership = Membership.objects.get(user=user)
    assert user.email == "ada@example.com"
    assert membership.role == Membership.Role.OWNER
    assert membership.organization.is_personal is True
    assert user.check_password("x-long-passphrase-1")


def test_sign_up_with_a_taken_email_is_a_conflict_and_creates_nothing(db):
    services.user_sign_up(email="ada@example.com", password="x-long-passphrase-1")
    with pytest.raises(Conflict) as error:
        services.user_sign_up(email="ADA@example.com", password="x-long-passphrase-2")
    assert error.value.code == "email_taken"
    assert Organization.objects.count() == 1


def test_invitation_is_mailed_and_accepted_once_by_the_invited_address(
    organization, owner, django_capture_on_commit_callbacks
):
    # given
    invitee = UserFactory(email="bob@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        invitation, token = services.invitation_create(
            organization=organization, email="Bob@example.com", role="admin", invited_by=owner
        )
    # when
    membership = services.invitation_accept(token=token, user=invitee)
    # then
    assert len(mail.outbox) == 1
    assert token in mail.outbox[0].body
    assert membership.role == Membership.Role.ADMIN
    assert token not in invitation.token_hash
    with pytest.raises(NotFound):
        services.invitation_accept(token=token, user=invitee)


def test_invitation_cannot_be_accepted_by_another_address(organization, owner):
    _invitation, token = services.invitation_create(
        organization=organization, email="bob@example.com", role="member", invited_by=owner
    )
    with pytest.raises(PermissionDenied):
        services.invitation_accept(token=token, user=UserFactory(email="eve@example.com"))
    assert not Membership.objects.filter(user__email="eve@example.com").exists()


def test_members_cannot_invite(organization):
    member = MembershipFactory(organization=organization, role=Membership.Role.MEMBER).user
    with pytest.raises(PermissionDenied):
        services.invitation_create(organization=organization, email="x@example.com", role="member", invited_by=member)
    assert not Invitation.objects.exists()


def test_admin_cannot_invite_an_owner(organization):
    admin = MembershipFactory(organization=organization, role=Membership.Role.ADMIN).user
    with pytest.raises(PermissionDenied):
        services.invitation_create(organization=organization, email="x@example.com", role="owner", invited_by=admin)


def test_revoked_invitation_cannot_be_used(organization, owner):
    invitation, token = services.invitation_create(
        organization=organization, email="bob@example.com", role="member", invited_by=owner
    )
    services.invitation_revoke(invitation=invitation, actor=owner)
    with pytest.raises(NotFound):
        services.invitation_accept(token=token, user=UserFactory(email="bob@example.com"))


def test_last_owner_cannot_leave(organization, owner):
    membership = Membership.objects.get(user=owner, organization=organization)
    with pytest.raises(Conflict):
        services.membership_remove(membership=membership, actor=owner)
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_removing_a_member_revokes_their_keys(organization, owner):
    member_membership = MembershipFactory(organization=organization, role=Membership.Role.MEMBER)
    api_key, _secret = api_key_for(organization, user=member_membership.user)
    services.membership_remove(membership=member_membership, actor=owner)
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert ApiKey.objects.filter(revoked_at__isnull=True, organization=organization).count() == 0


@pytest.mark.parametrize(("role", "revoked"), [(Membership.Role.BILLING, True), (Membership.Role.ADMIN, False)])
def test_a_member_moved_to_a_role_that_holds_no_keys_loses_their_keys(organization, owner, role, revoked):
    # given: a member's gateway key (a billing member may not call models or rent)
    member_membership = MembershipFactory(organization=organization, role=Membership.Role.MEMBER)
    api_key, secret = api_key_for(organization, user=member_membership.user, scopes=["gateway"])
    # when
    services.membership_change_role(membership=member_membership, role=role, actor=owner)
    # then: the key goes with the role that allowed it; another role that holds keys keeps it
    api_key.refresh_from_db()
    assert (api_key.revoked_at is not None) == revoked


def test_provider_application_is_approved_by_staff_only(organization, owner):
    # given
    profile = services.provider_apply(
        organization=organization, actor=owner, legal_name="Acme 算力", contact_name="Li",
        contact_email="ops@acme.cn", regions=["guizhou", "yangtze-delta"],
    )  # fmt: skip
    staff = UserFactory(is_staff=True)
    # when / then
    with pytest.raises(PermissionDenied):
        services.provider_approve(profile_id=profile.pk, reviewer=owner)
    services.provider_approve(profile_id=profile.pk, reviewer=staff)
    organization.refresh_from_db()
    assert organization.is_approved_provider is True
    assert ProviderProfile.objects.get(pk=profile.pk).reviewed_by == staff


def test_rejected_provider_may_apply_again_but_pending_may_not(organization, owner):
    fields = {"legal_name": "Acme", "contact_name": "Li", "contact_email": "ops@acme.cn", "regions": ["gansu"]}
    profile = services.provider_apply(organization=organization, actor=owner, **fields)
    with pytest.raises(Conflict):
        services.provider_apply(organization=organization, actor=owner, **fields)
    services.provider_reject(profile_id=profile.pk, reviewer=UserFactory(is_staff=True), note="Licence missing")
    again = services.provider_apply(organization=organization, actor=owner, **fields)
    assert again.pk == profile.pk
    assert again.status == ProviderProfile.Status.PENDING
    assert again.review_note == ""


def test_provider_application_needs_known_regions(organization, owner):
    with pytest.raises(DomainError) as error:
        services.provider_apply(
            organization=organization,
            actor=owner,
            legal_name="A",
            contact_name="B",
            contact_email="c@d.cn",
            regions=["mars"],
        )
    assert error.value.code == "invalid_regions"


def test_owner_promotes_and_demotes_but_the_last_owner_stays(organization, owner):
    # given
    member = MembershipFactory(organization=organization, role=Membership.Role.MEMBER)
    owner_membership = Membership.objects.get(user=owner, organization=organization)
    # when
    services.membership_change_role(membership=member, role="owner", actor=owner)
    services.membership_change_role(membership=owner_membership, role="billing", actor=owner)
    # then
    member.refresh_from_db()
    assert member.role == Membership.Role.OWNER
    with pytest.raises(Conflict):
        services.membership_change_role(membership=member, role="admin", actor=member.user)
    assert Membership.objects.get(pk=member.pk).role == Membership.Role.OWNER


def test_admin_cannot_touch_ownership(organization, owner):
    admin = MembershipFactory(organization=organization, role=Membership.Role.ADMIN).user
    owner_membership = Membership.objects.get(user=owner, organization=organization)
    with pytest.raises(PermissionDenied):
        services.membership_change_role(membership=owner_membership, role="member", actor=admin)
    with pytest.raises(PermissionDenied):
        services.membership_remove(membership=owner_membership, actor=admin)
    assert Membership.objects.get(pk=owner_membership.pk).role == Membership.Role.OWNER
