import factory
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice
from factory.django import DjangoModelFactory

from accounts import services
from accounts.models import Membership, Organization, ProviderProfile, User

PASSWORD = "correct-horse-battery-9"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    full_name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @classmethod
    def _after_postgeneration(cls, instance, create, results=None):
        if create:
            instance.save()


class OrganizationFactory(DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class MembershipFactory(DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Membership.Role.OWNER


class ProviderProfileFactory(DjangoModelFactory):
    class Meta:
        model = ProviderProfile

    organization = factory.SubFactory(OrganizationFactory)
    legal_name = factory.Sequence(lambda n: f"Provider {n} Ltd")
    contact_name = "Contact"
    contact_email = "ops@example.com"
    regions = ["yangtze-delta"]
    status = ProviderProfile.Status.APPROVED


def api_key_for(
    organization: Organization,
    *,
    user: User | None = None,
    scopes=("read", "rent", "gateway", "provider", "billing", "admin"),
    **kwargs,
):
    """A real key made by the service: returns (ApiKey, full secret)."""
    if user is None:
        membership = organization.memberships.filter(role=Membership.Role.OWNER).select_related("user").first()
        user = membership.user if membership else MembershipFactory(organization=organization).user
    return services.api_key_create(organization=organization, created_by=user, name="test key", scopes=scopes, **kwargs)


class TOTPDeviceFactory(DjangoModelFactory):
    class Meta:
        model = TOTPDevice

    user = factory.SubFactory(UserFactory)
    name = "default"
    confirmed = True


def staff_login(client, user: User) -> TOTPDevice:
    """Sign a staff member in as the admin requires (STAFF_REQUIRE_TWO_FACTOR): with a confirmed TOTP device,
    in a session that has passed it."""
    device = TOTPDeviceFactory(user=user)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device
