"""The residency pin: where an organization's (or one API key's) data may go. One rule for the gateway's calls and
for rentals: every pin that is set must name the zone, so two pins that disagree leave no zone at all."""

from django.db.models import Q

from marketplace.models import GatewayPolicy

# True when no pin of the organization (parameter 1) or the API key (parameter 2, may be NULL) excludes the zone
# (parameter 3): the same rule as `residency_zones_allowed`, for a guarded statement.
RESIDENCY_PIN_ALLOWS_SQL = """NOT EXISTS (SELECT 1 FROM marketplace_gatewaypolicy p
    WHERE (p.organization_id = %s OR p.api_key_id = %s) AND p.residency_zone <> '' AND p.residency_zone <> %s)"""


def residency_zones_allowed(pins: set[str]) -> frozenset[str] | None:
    """The zones that pins allow: None for any zone (no pin), the one pinned zone, or none when pins disagree."""
    if not pins:
        return None
    return frozenset(pins) if len(pins) == 1 else frozenset()


def residency_pins(*, organization_id: int, api_key_id: int | None) -> set[str]:
    """The zones the organization's and the API key's gateway policies pin to (empty: no pin)."""
    owners = Q(organization_id=organization_id) | (Q(api_key_id=api_key_id) if api_key_id is not None else Q())
    return set(GatewayPolicy.objects.filter(owners).exclude(residency_zone="").values_list("residency_zone", flat=True))
