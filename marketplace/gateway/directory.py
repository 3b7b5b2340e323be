"""What a web worker knows about callers and model services, read from the database and kept a few seconds.

A call must not wait on the database: the key, its organization's policy and the published services are read once
per GATEWAY_DIRECTORY_SECONDS per process (a revoked key or a paused service stops within that time).
"""

import asyncio
import hmac
import time
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.db.models import Q
from django.utils.timezone import now

from accounts.models import ApiKey, Membership
from accounts.services import api_key_hash
from billing.money import AMOUNT_PLACES
from billing.services.quotas import quota_get
from marketplace.models import Application, GatewayPolicy, ModelService
from marketplace.selectors.residency import residency_zones_allowed

UNITS = 10**AMOUNT_PLACES  # money in the gateway is counted in integers of the ledger's last place


@dataclass(frozen=True)
class Caller:
    """An active API key with what it may do: scopes, the zones it may be served in, its rate limits."""

    api_key_id: int | None  # None: a signed-in member trying models on the site (a try-it token)
    organization_id: int
    secret_hash: str
    scopes: frozenset[str]
    expires_at: datetime | None
    zones: frozenset[str] | None  # None: any zone; empty: the key's and the organization's pins disagree
    limits: tuple[tuple[str, int | None, int | None], ...]  # (bucket, requests per minute, tokens per minute)
    spend_limit_units: int | None  # the key's monthly spend limit
    spend_cap_units: int | None = None  # the organization's monthly spend cap (compute, calls and subscriptions)


@dataclass(frozen=True)
class Service:
    id: int
    provider_id: int
    name: str  # provider-slug/model-slug: what callers name and what the gateway answers with
    slug: str
    modality: str
    zone: str
    base_url: str
    upstream_api_key: str
    upstream_model: str
    input_units_per_1k: int
    output_units_per_1k: int
    max_output_tokens: int
    created: int  # Unix time, as OpenAI's model objects give it
    alias_approved: bool = False  # staff let it answer its model's alias (the bare slug)

    def cost_units(self, *, prompt_tokens: int, completion_tokens: int) -> int:
        """Tokens × price per 1K, rounded half-up to the ledger's last place (one rounding per call)."""
        return (prompt_tokens * self.input_units_per_1k + completion_tokens * self.output_units_per_1k + 500) // 1000


@dataclass(frozen=True)
class AppListing:
    """A published application's current version, as the gateway runs it (`app:<slug>`)."""

    id: int
    version_id: int
    name: str  # app:<slug>
    seller_id: int
    seller_slug: str
    service_id: int
    system_prompt: str
    temperature: float | None  # a model parameter sent upstream, not money
    max_tokens: int | None
    pricing: str
    price_units: int  # per call, per 1K tokens, or per month
    trial_calls: int
    created: int

    def price_units_of(self, *, prompt_tokens: int, completion_tokens: int) -> int:
        """The application's part of a paid call, rounded half-up to the ledger's last place."""
        if self.pricing == "per_call":
            return self.price_units
        if self.pricing == "per_1k_tokens":
            return ((prompt_tokens + completion_tokens) * self.price_units + 500) // 1000
        return 0


TRY_IT_PREFIX = "mktry_"
TRY_IT_SALT = "gateway-try-it"


def try_it_token(*, user_id: int, organization_id: int) -> str:
    """A bearer token the site's try-it forms call the gateway with, as the signed-in member for the organization:
    signed, not stored, valid for GATEWAY_TRY_IT_SECONDS."""
    return TRY_IT_PREFIX + signing.dumps([user_id, organization_id], salt=TRY_IT_SALT)


def caller_load(*, prefix: str) -> Caller | None:
    key = (
        ApiKey.objects.select_related("created_by")
        .filter(prefix=prefix, revoked_at__isnull=True, created_by__is_active=True)
        .first()
    )
    if key is None:
        return None
    return _caller(organization_id=key.organization_id, key=key)


def try_it_caller_load(*, user_id: int, organization_id: int) -> Caller | None:
    """The caller for a try-it token: an active member who may call models (billing members may not)."""
    member = Membership.objects.filter(user_id=user_id, user__is_active=True, organization_id=organization_id).exclude(
        role=Membership.Role.BILLING
    )
    return _caller(organization_id=organization_id, key=None) if member.exists() else None


def _caller(*, organization_id: int, key: ApiKey | None) -> Caller:
    owners = Q(organization_id=organization_id) | (Q(api_key=key) if key is not None else Q())
    policies = {(policy.api_key_id is not None): policy for policy in GatewayPolicy.objects.filter(owners)}
    key_policy, organization_policy = policies.get(True), policies.get(False)
    pins = {policy.residency_zone for policy in (key_policy, organization_policy) if policy and policy.residency_zone}
    spend_cap = quota_get(organization_id=organization_id).monthly_spend_cap
    organization_limits = (
        organization_policy.requests_per_minute if organization_policy else None,
        organization_policy.tokens_per_minute if organization_policy else None,
    )
    limits = [
        (
            f"org:{organization_id}",
            organization_limits[0] or settings.GATEWAY_DEFAULT_REQUESTS_PER_MINUTE,
            organization_limits[1] or settings.GATEWAY_DEFAULT_TOKENS_PER_MINUTE,
        )
    ]
    if key_policy and (key_policy.requests_per_minute or key_policy.tokens_per_minute):
        limits.append((f"key:{key.pk}", key_policy.requests_per_minute, key_policy.tokens_per_minute))
    return Caller(
        api_key_id=key.pk if key else None,
        organization_id=organization_id,
        secret_hash=key.secret_hash if key else "",
        scopes=frozenset(key.scopes) if key else frozenset({"gateway"}),
        expires_at=key.expires_at if key else None,
        zones=residency_zones_allowed(pins),
        limits=tuple(limits),
        spend_limit_units=None
        if key is None or key.monthly_spend_limit is None
        else int(key.monthly_spend_limit * UNITS),
        spend_cap_units=None if spend_cap is None else int(spend_cap * UNITS),
    )


def services_load() -> list[Service]:
    rows = ModelService.objects.filter(status=ModelService.Status.PUBLISHED).select_related("provider")
    return [
        Service(
            id=row.pk,
            provider_id=row.provider_id,
            name=f"{row.provider.slug}/{row.slug}",
            slug=row.slug,
            modality=row.modality,
            zone=row.residency_zone,
            base_url=row.upstream_base_url.rstrip("/"),
            upstream_api_key=row.upstream_api_key,
            upstream_model=row.upstream_model or row.slug,
            input_units_per_1k=int(row.input_price_per_1k_tokens * UNITS),
            output_units_per_1k=int(row.output_price_per_1k_tokens * UNITS),
            max_output_tokens=row.max_output_tokens or row.context_length,
            created=int(row.created_at.timestamp()),
            alias_approved=row.alias_approved_at is not None,
        )
        for row in rows
    ]


def applications_load() -> list[AppListing]:
    rows = Application.objects.filter(status=Application.Status.PUBLISHED).select_related("seller", "current_version")
    return [
        AppListing(
            id=row.pk,
            version_id=row.current_version_id,
            name=row.gateway_model,
            seller_id=row.seller_id,
            seller_slug=row.seller.slug,
            service_id=row.current_version.model_service_id,
            system_prompt=row.current_version.system_prompt,
            temperature=None if row.current_version.temperature is None else float(row.current_version.temperature),
            max_tokens=row.current_version.max_tokens,
            pricing=row.current_version.pricing,
            price_units=int(row.current_version.price * UNITS),
            trial_calls=row.current_version.free_trial_calls,
            created=int((row.published_at or row.created_at).timestamp()),
        )
        for row in rows
    ]


class Directory:
    """Callers by key id and services by name and by alias, each refreshed after GATEWAY_DIRECTORY_SECONDS."""

    def __init__(self) -> None:
        self._callers: dict[str, tuple[float, Caller | None]] = {}
        self._services: dict[str, list[Service]] = {}
        self._applications: dict[str, tuple[AppListing, Service | None]] = {}
        self._services_read_at = -1e9
        self._services_lock = asyncio.Lock()
        self._unhealthy_until: dict[int, float] = {}

    async def caller(self, raw_key: str) -> Caller | None:
        """The caller for `mk_<env>_<id>_<secret>` or a try-it token, or None for any key that is not an active
        one."""
        if raw_key.startswith(TRY_IT_PREFIX):
            return await self.try_it_caller(raw_key[len(TRY_IT_PREFIX) :])
        parts = raw_key.split("_", 3)
        if len(parts) != 4 or parts[0] != "mk" or parts[1] != settings.API_KEY_ENVIRONMENT:
            return None
        cached = self._callers.get(parts[2])
        if cached is None or time.monotonic() - cached[0] > settings.GATEWAY_DIRECTORY_SECONDS:
            cached = (time.monotonic(), await sync_to_async(caller_load)(prefix=parts[2]))
            self._callers[parts[2]] = cached
        caller = cached[1]
        if caller is None or not hmac.compare_digest(caller.secret_hash, api_key_hash(parts[3])):
            return None
        if caller.expires_at is not None and caller.expires_at <= now():
            return None
        return caller

    async def try_it_caller(self, token: str) -> Caller | None:
        try:
            user_id, organization_id = signing.loads(token, salt=TRY_IT_SALT, max_age=settings.GATEWAY_TRY_IT_SECONDS)
        except (signing.BadSignature, ValueError, TypeError):
            return None
        cache_key = f"try:{user_id}:{organization_id}"
        cached = self._callers.get(cache_key)
        if cached is None or time.monotonic() - cached[0] > settings.GATEWAY_DIRECTORY_SECONDS:
            caller = await sync_to_async(try_it_caller_load)(user_id=user_id, organization_id=organization_id)
            cached = self._callers[cache_key] = (time.monotonic(), caller)
        return cached[1]

    async def services(self) -> dict[str, list[Service]]:
        if time.monotonic() - self._services_read_at > settings.GATEWAY_DIRECTORY_SECONDS:
            async with self._services_lock:
                if time.monotonic() - self._services_read_at > settings.GATEWAY_DIRECTORY_SECONDS:
                    by_name: dict[str, list[Service]] = {}
                    by_id: dict[int, Service] = {}
                    for service in await sync_to_async(services_load)():
                        by_name[service.name] = [service]
                        if service.alias_approved:  # an alias routes only to services staff approved for it
                            by_name.setdefault(service.slug, []).append(service)
                        by_id[service.id] = service
                    self._applications = {
                        listing.name: (listing, by_id.get(listing.service_id))
                        for listing in await sync_to_async(applications_load)()
                    }
                    self._services, self._services_read_at = by_name, time.monotonic()
        return self._services

    async def application(self, name: str) -> tuple[AppListing, Service | None] | None:
        """The published application called `name` (app:<slug>) and the service it runs on (None: not published)."""
        await self.services()
        return self._applications.get(name)

    async def visible_applications(self, *, zones: frozenset[str] | None) -> list[AppListing]:
        await self.services()
        return [
            listing
            for listing, service in self._applications.values()
            if service is not None and (zones is None or service.zone in zones)
        ]

    async def route(self, *, model: str, modality: str, zones: frozenset[str] | None) -> list[Service]:
        """The services that may serve `model` for this caller, best first: a `provider/model` name gives its one
        service; an alias (a model slug) every provider's that staff approved for it, healthy before unhealthy, then
        cheapest first."""
        candidates = [
            service
            for service in (await self.services()).get(model, [])
            if service.modality == modality and (zones is None or service.zone in zones)
        ]
        moment = time.monotonic()
        return sorted(
            candidates,
            key=lambda s: (
                self._unhealthy_until.get(s.id, 0) > moment,
                s.input_units_per_1k + s.output_units_per_1k,
                s.id,
            ),
        )

    async def visible_services(self, *, zones: frozenset[str] | None) -> list[Service]:
        return [
            service
            for name, (service, *_rest) in (await self.services()).items()
            if name == service.name and (zones is None or service.zone in zones)
        ]

    def mark_unhealthy(self, service: Service) -> None:
        self._unhealthy_until[service.id] = time.monotonic() + settings.GATEWAY_UNHEALTHY_SECONDS
