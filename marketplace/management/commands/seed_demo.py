"""Demo data for the embedded run: a buyer, an approved provider and a staff user. Idempotent."""

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts import services as account_services
from accounts.models import Organization, ProviderProfile, User
from marketplace.core.regions import Region

DEMO_PASSWORD = "demo-pass-2026"
DEMO_USERS = {
    "buyer": ("buyer@demo.local", "演示买家 Demo Buyer"),
    "provider": ("provider@demo.local", "演示算力商 Demo Provider"),
    "staff": ("staff@demo.local", "平台运营 Platform Staff"),
}


class Command(BaseCommand):
    help = "Load demo users and organizations (safe to run twice: nothing is created twice)."

    def _user(self, key: str) -> tuple[User, bool]:
        email, name = DEMO_USERS[key]
        user = User.objects.filter(email=email).first()
        if user:
            return user, False
        return account_services.user_sign_up(email=email, password=DEMO_PASSWORD, full_name=name), True

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        created = 0
        buyer, new = self._user("buyer")
        created += new
        provider, new = self._user("provider")
        created += new
        staff, new = self._user("staff")
        created += new
        if not staff.is_staff:
            staff.is_staff = staff.is_superuser = True
            staff.save(update_fields=["is_staff", "is_superuser"])

        provider_org = Organization.objects.filter(memberships__user=provider, is_personal=False).first()
        if provider_org is None:
            provider_org = account_services.organization_create(name="华东智算 East China AI Compute", owner=provider)
            created += 1
            account_services.organization_activate(user=provider, organization=provider_org)
        if not ProviderProfile.objects.filter(organization=provider_org).exists():
            profile = account_services.provider_apply(
                organization=provider_org,
                actor=provider,
                legal_name="华东智算科技有限公司",
                contact_name="Demo Provider",
                contact_email=provider.email,
                regions=[Region.YANGTZE_DELTA, Region.GUIZHOU, Region.INNER_MONGOLIA],
            )
            account_services.provider_approve(profile_id=profile.pk, reviewer=staff, note="Demo provider")
            created += 1

        self.stdout.write(self.style.SUCCESS(f"Demo data ready ({created} new objects)."))
        for key, (email, _name) in DEMO_USERS.items():
            self.stdout.write(f"  {key:<9} {email:<22} password: {DEMO_PASSWORD}")
