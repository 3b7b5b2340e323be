"""Writes of the catalogue: providers create, price, publish, pause and retire offerings and model services."""

import logging
from decimal import Decimal

from django.db import transaction
from django.utils.timezone import now
from django.utils.translation import gettext as _

from accounts.models import Organization, User
from accounts.selectors import provider_is_approved
from marketplace.core.errors import Conflict, DomainError, PermissionDenied
from marketplace.core.upstreams import upstream_url_refusal
from marketplace.models import AcceleratorModel, ModelService, Node, Offering, OfferingPriceChange, Site

logger = logging.getLogger(__name__)

OFFERING_FIELDS = {
    "name", "description", "site", "accelerator", "accelerators_per_node", "vcpu_per_node", "ram_gb_per_node",
    "disk_gb_per_node", "network_gbps", "capacity_nodes", "on_demand_price", "interruptible_price",
    "reserved_1w_discount_percent", "reserved_1m_discount_percent", "reserved_3m_discount_percent",
    "min_rental_hours", "max_rental_hours", "metering",
}  # fmt: skip
MODEL_SERVICE_FIELDS = {
    "name", "slug", "model_family", "description", "modality", "context_length", "max_output_tokens", "precision",
    "input_price_per_1k_tokens", "output_price_per_1k_tokens", "rate_limit_rpm", "rate_limit_tpm",
    "residency_zone", "upstream_base_url", "upstream_api_key",
}  # fmt: skip
MAX_RESERVED_DISCOUNT = Decimal("90")


class InvalidTransition(Conflict):
    code = "invalid_transition"


def provider_require(*, organization: Organization) -> None:
    if not provider_is_approved(organization=organization):
        raise PermissionDenied(
            _("Only approved providers can list capacity. Apply under “Become a provider”."), code="provider_required"
        )


def _reject_unknown_fields(fields: dict, *, allowed: set[str]) -> None:
    unknown = set(fields) - allowed
    if unknown:
        raise DomainError(_("Unknown fields: %(f)s.") % {"f": ", ".join(sorted(unknown))}, code="invalid")


def _validation_error(field: str, message: str) -> DomainError:
    return DomainError(message, code="invalid", fields={field: [message]})


def _offering_validate(offering: Offering) -> None:
    """Rules that hold for every saved offering, draft or not."""
    if offering.on_demand_price is None or offering.on_demand_price <= 0:
        raise _validation_error("on_demand_price", _("The on-demand price must be positive."))
    if offering.interruptible_price is not None:
        if offering.interruptible_price <= 0:
            raise _validation_error("interruptible_price", _("The interruptible price must be positive."))
        if offering.interruptible_price > offering.on_demand_price:
            raise _validation_error(
                "interruptible_price", _("The interruptible price cannot exceed the on-demand price.")
            )
    for term, discount in offering.reserved_discounts().items():
        if discount is not None and not (0 < discount <= MAX_RESERVED_DISCOUNT):
            raise _validation_error(
                f"reserved_{term}_discount_percent", _("A reserved discount is between 0 and 90 percent.")
            )
    if offering.accelerators_per_node < 1:
        raise _validation_error("accelerators_per_node", _("A node has at least one accelerator."))
    if offering.max_rental_hours is not None and offering.max_rental_hours < offering.min_rental_hours:
        raise _validation_error("max_rental_hours", _("The maximum rental is shorter than the minimum."))
    if offering.capacity_nodes < offering.rented_nodes:
        raise _validation_error(
            "capacity_nodes",
            _("%(rented)d nodes are rented; capacity cannot go below that.") % {"rented": offering.rented_nodes},
        )


def _offering_validate_publishable(offering: Offering) -> None:
    missing = [field for field in ("description",) if not getattr(offering, field).strip()]
    if offering.capacity_nodes < 1 and not Node.objects.filter(offering=offering).exists():
        missing.append("capacity_nodes")  # a node-backed offering's capacity comes as its nodes go live
    if missing:
        raise DomainError(
            _("Complete these fields before publishing: %(fields)s.") % {"fields": ", ".join(missing)},
            code="incomplete_offering",
            fields={field: [_("Required before publishing.")] for field in missing},
        )


def _price_change_record(*, offering: Offering, actor: User | None) -> None:
    OfferingPriceChange.objects.create(
        offering=offering,
        on_demand_price=offering.on_demand_price,
        interruptible_price=offering.interruptible_price,
        effective_at=now(),
        changed_by=actor,
    )


@transaction.atomic
def offering_create(
    *, provider: Organization, actor: User, site: Site, accelerator: AcceleratorModel, **fields
) -> Offering:
    """A draft offering of an approved provider; its first price opens the price history."""
    provider_require(organization=provider)
    _reject_unknown_fields(fields, allowed=OFFERING_FIELDS)
    offering = Offering(provider=provider, site=site, accelerator=accelerator, **fields)
    _offering_validate(offering)
    offering.save()
    _price_change_record(offering=offering, actor=actor)
    logger.info("offering created", extra={"offering_id": offering.pk, "provider_id": provider.pk})
    return offering


@transaction.atomic
def offering_update(*, offering_id: int, actor: User, **fields) -> Offering:
    """Edit an offering. A price change is recorded and applies to new rentals only (rentals keep a snapshot)."""
    _reject_unknown_fields(fields, allowed=OFFERING_FIELDS)
    offering = Offering.objects.select_for_update().get(pk=offering_id)
    if offering.status == Offering.Status.RETIRED:
        raise Conflict(_("A retired offering cannot be changed."), code="offering_retired")
    capacity = fields.get("capacity_nodes", offering.capacity_nodes)
    if capacity != offering.capacity_nodes and Node.objects.filter(offering=offering).exists():
        message = _("This offering's capacity is its live nodes: add or retire nodes to change it.")
        raise _validation_error("capacity_nodes", message)
    old_prices = (offering.on_demand_price, offering.interruptible_price)
    for name, value in fields.items():
        setattr(offering, name, value)
    _offering_validate(offering)
    if offering.status == Offering.Status.PUBLISHED:
        _offering_validate_publishable(offering)
    offering.save()
    if (offering.on_demand_price, offering.interruptible_price) != old_prices:
        _price_change_record(offering=offering, actor=actor)
    return offering


def _transition(model, *, pk: int, to: str, extra_check=None):
    if to not in model.Status.values:
        raise DomainError(_("Unknown status."), code="invalid_status", status=to)
    obj = model.objects.select_for_update().get(pk=pk)
    if obj.status == to:
        return obj, False
    if to not in model.TRANSITIONS.get(obj.status, set()):
        raise InvalidTransition(
            _("Cannot move from %(a)s to %(b)s.") % {"a": obj.get_status_display(), "b": model.Status(to).label},
            current=obj.status,
            target=to,
        )
    if extra_check:
        extra_check(obj)
    obj.status = to
    return obj, True


@transaction.atomic
def offering_set_status(*, offering_id: int, status: str, actor: User) -> Offering:
    """Publish, pause or retire along the declared graph; publishing needs a complete offering."""
    check = _offering_validate_publishable if status == Offering.Status.PUBLISHED else None
    offering, changed = _transition(Offering, pk=offering_id, to=status, extra_check=check)
    if changed:
        fields = ["status", "updated_at"]
        if status == Offering.Status.PUBLISHED and offering.published_at is None:
            offering.published_at = now()
            fields.append("published_at")
        offering.save(update_fields=fields)
        logger.info("offering status", extra={"offering_id": offering.pk, "status": status})
    return offering


def _model_service_validate(service: ModelService) -> None:
    for field in ("input_price_per_1k_tokens", "output_price_per_1k_tokens"):
        if getattr(service, field) is None or getattr(service, field) <= 0:
            raise _validation_error(field, _("Prices must be positive."))
    if service.modality == ModelService.Modality.CHAT and not service.max_output_tokens:
        raise _validation_error("max_output_tokens", _("A chat model needs a maximum output length."))
    if service.max_output_tokens and service.max_output_tokens > service.context_length:
        raise _validation_error("max_output_tokens", _("The output cannot exceed the context length."))
    refused = upstream_url_refusal(service.upstream_base_url)
    if refused is not None:
        message = _(
            "The upstream must be a public http(s) address; %(host)s is inside a private, loopback, link-local or "
            "reserved network."
        ) % {"host": refused}
        raise DomainError(message, code="upstream_url_forbidden", fields={"upstream_base_url": [message]})


@transaction.atomic
def model_service_create(*, provider: Organization, actor: User, **fields) -> ModelService:
    provider_require(organization=provider)
    _reject_unknown_fields(fields, allowed=MODEL_SERVICE_FIELDS)
    if ModelService.objects.filter(provider=provider, slug=fields.get("slug")).exists():
        raise Conflict(_("You already have a model service with this slug."), code="slug_taken")
    service = ModelService(provider=provider, **fields)
    _model_service_validate(service)
    service.save()
    return service


# What staff looked at when they approved a service for its model's public alias.
APPROVED_FIELDS = frozenset({"slug", "model_family", "modality", "precision", "upstream_base_url", "upstream_api_key"})


@transaction.atomic
def model_service_update(*, model_service_id: int, actor: User, **fields) -> ModelService:
    _reject_unknown_fields(fields, allowed=MODEL_SERVICE_FIELDS)
    service = ModelService.objects.select_for_update().get(pk=model_service_id)
    if service.status == ModelService.Status.RETIRED:
        raise Conflict(_("A retired model service cannot be changed."), code="model_service_retired")
    new_slug = fields.get("slug", service.slug)
    if (
        new_slug != service.slug
        and ModelService.objects.filter(provider_id=service.provider_id, slug=new_slug).exists()
    ):
        raise Conflict(_("You already have a model service with this slug."), code="slug_taken")
    if fields.get("upstream_api_key") == "":
        fields.pop("upstream_api_key")  # blank means "keep the stored secret": it is never shown to edit
    if any(name in APPROVED_FIELDS and value != getattr(service, name) for name, value in fields.items()):
        # Staff approve a service for one alias as it answers then: another slug is another alias, another upstream
        # or model another service (a cheap small model behind an approved name would take the alias's callers).
        service.alias_approved_at = service.alias_approved_by = None
    for name, value in fields.items():
        setattr(service, name, value)
    _model_service_validate(service)
    service.save()
    return service


@transaction.atomic
def model_service_alias_approve(*, model_service_id: int, actor: User) -> ModelService:
    """Staff let the service join its model's public alias (callers naming only the slug); idempotent."""
    service = ModelService.objects.select_for_update().get(pk=model_service_id)
    if service.alias_approved_at is None:
        service.alias_approved_at, service.alias_approved_by = now(), actor
        service.save(update_fields=["alias_approved_at", "alias_approved_by", "updated_at"])
        logger.info("model service alias approved", extra={"model_service_id": service.pk, "actor_id": actor.pk})
    return service


@transaction.atomic
def model_service_alias_revoke(*, model_service_id: int, actor: User) -> ModelService:
    """Staff take the service out of its model's alias; it stays callable by its `provider/slug` name."""
    service = ModelService.objects.select_for_update().get(pk=model_service_id)
    if service.alias_approved_at is not None:
        service.alias_approved_at = service.alias_approved_by = None
        service.save(update_fields=["alias_approved_at", "alias_approved_by", "updated_at"])
        logger.info("model service alias revoked", extra={"model_service_id": service.pk, "actor_id": actor.pk})
    return service


@transaction.atomic
def model_service_set_status(*, model_service_id: int, status: str, actor: User) -> ModelService:
    service, changed = _transition(ModelService, pk=model_service_id, to=status)
    if changed:
        service.save(update_fields=["status", "updated_at"])
    return service
