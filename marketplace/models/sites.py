from django.db import models
from django.utils.translation import gettext_lazy as _

from marketplace.core.models import TimeStampedModel
from marketplace.core.regions import Region


class SiteTier(models.TextChoices):
    CENTRAL = "central", _("Central cluster")
    REGIONAL = "regional", _("Regional centre")
    EDGE = "edge", _("Edge site")
    MOBILE = "mobile", _("Mobile unit")


class ResidencyZone(models.TextChoices):
    """Where data may live. A request pinned to a zone is only ever served inside it."""

    CN_NORTH = "cn-north", _("Mainland China · North")
    CN_EAST = "cn-east", _("Mainland China · East")
    CN_SOUTH = "cn-south", _("Mainland China · South")
    CN_SOUTHWEST = "cn-southwest", _("Mainland China · Southwest")
    CN_WEST = "cn-west", _("Mainland China · West")
    HONG_KONG = "hk", _("Hong Kong SAR")


class Site(TimeStampedModel):
    """A data centre where capacity lives; staff maintain the list, providers place offerings in it."""

    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=80, unique=True)
    region = models.CharField(_("region"), max_length=20, choices=Region.choices, db_index=True)
    tier = models.CharField(_("tier"), max_length=12, choices=SiteTier.choices, db_index=True)
    residency_zone = models.CharField(
        _("data-residency zone"), max_length=16, choices=ResidencyZone.choices, db_index=True
    )
    operator = models.CharField(_("operator"), max_length=120)
    pue = models.DecimalField(_("PUE"), max_digits=4, decimal_places=2, null=True, blank=True)

    class Meta:
        verbose_name = _("site")
        verbose_name_plural = _("sites")
        ordering = ["region", "name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(pue__isnull=True) | models.Q(pue__gte=1), name="site_pue_at_least_1"
            )
        ]

    def __str__(self) -> str:
        return self.name
