from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.utils.translation import gettext_lazy as _


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    label = "marketplace"
    verbose_name = _("Marketplace")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from marketplace.core import lookups  # noqa: F401 - registers the lookups


class MarketplaceAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin, served by our site (marketplace.core.admin.MarketplaceAdminSite)."""

    default = False  # named in INSTALLED_APPS; MarketplaceConfig stays this module's default
    default_site = "marketplace.core.admin.MarketplaceAdminSite"
