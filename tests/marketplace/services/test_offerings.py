from decimal import Decimal

import pytest

from marketplace.core.errors import Conflict, DomainError, PermissionDenied
from marketplace.models import ModelService, Offering
from marketplace.services import offerings as services
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.marketplace import (
    ModelServiceFactory,
    OfferingFactory,
    ProviderOrganizationFactory,
    SiteFactory,
    accelerator,
)

OFFERING = {
    "name": "8× H100 SXM · Shanghai",
    "description": "NVLink node",
    "accelerators_per_node": 8,
    "vcpu_per_node": 128,
    "ram_gb_per_node": 1024,
    "disk_gb_per_node": 8000,
    "network_gbps": 400,
    "capacity_nodes": 10,
    "on_demand_price": Decimal("18.50"),
}


@pytest.fixture
def provider(db):
    return ProviderOrganizationFactory()


@pytest.fixture
def actor(provider):
    return MembershipFactory(organization=provider).user


def test_offering_create_starts_a_draft_and_the_price_history(provider, actor):
    offering = services.offering_create(
        provider=provider, actor=actor, site=SiteFactory(), accelerator=accelerator("nvidia-h100-sxm"), **OFFERING
    )
    assert offering.status == Offering.Status.DRAFT
    assert list(offering.price_changes.values_list("on_demand_price", flat=True)) == [Decimal("18.50")]


def test_only_approved_providers_create_offerings(db):
    buyer = OrganizationFactory()
    with pytest.raises(PermissionDenied) as error:
        services.offering_create(
            provider=buyer, actor=MembershipFactory(organization=buyer).user, site=SiteFactory(),
            accelerator=accelerator("nvidia-h100-sxm"), **OFFERING,
        )  # fmt: skip
    assert error.value.code == "provider_required"
    assert not Offering.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"on_demand_price": Decimal("0")}, "on_demand_price"),
        ({"interruptible_price": Decimal("20")}, "interruptible_price"),
        ({"reserved_1m_discount_percent": Decimal("95")}, "reserved_1m_discount_percent"),
        ({"min_rental_hours": 10, "max_rental_hours": 5}, "max_rental_hours"),
    ],
)
def test_offering_validation_names_the_field(provider, actor, changes, field):
    with pytest.raises(DomainError) as error:
        services.offering_create(
            provider=provider, actor=actor, site=SiteFactory(), accelerator=accelerator("nvidia-h100-sxm"),
            **{**OFFERING, **changes},
        )  # fmt: skip
    assert list(error.value.extra["fields"]) == [field]
    assert not Offering.objects.exists()


def test_capacity_never_goes_below_what_is_rented(provider, actor):
    offering = OfferingFactory(provider=provider, capacity_nodes=10, rented_nodes=6)
    with pytest.raises(DomainError) as error:
        services.offering_update(offering_id=offering.pk, actor=actor, capacity_nodes=5)
    assert "capacity_nodes" in error.value.extra["fields"]
    offering.refresh_from_db()
    assert offering.capacity_nodes == 10


def test_price_change_is_recorded_and_only_when_the_price_changes(provider, actor):
    offering = services.offering_create(
        provider=provider, actor=actor, site=SiteFactory(), accelerator=accelerator("nvidia-h100-sxm"), **OFFERING
    )
    services.offering_update(offering_id=offering.pk, actor=actor, name="Renamed")
    services.offering_update(offering_id=offering.pk, actor=actor, on_demand_price=Decimal("16.00"))
    history = list(offering.price_changes.values_list("on_demand_price", flat=True))
    assert history == [Decimal("16.00"), Decimal("18.50")]


def test_publishing_needs_a_complete_offering(provider, actor):
    offering = OfferingFactory(provider=provider, status=Offering.Status.DRAFT, description="")
    with pytest.raises(DomainError) as error:
        services.offering_set_status(offering_id=offering.pk, status="published", actor=actor)
    assert error.value.code == "incomplete_offering"
    services.offering_update(offering_id=offering.pk, actor=actor, description="Ready")
    published = services.offering_set_status(offering_id=offering.pk, status="published", actor=actor)
    assert published.status == Offering.Status.PUBLISHED
    assert published.published_at is not None


def test_status_follows_the_declared_graph(provider, actor):
    offering = OfferingFactory(provider=provider)
    services.offering_set_status(offering_id=offering.pk, status="paused", actor=actor)
    services.offering_set_status(offering_id=offering.pk, status="retired", actor=actor)
    with pytest.raises(Conflict) as error:
        services.offering_set_status(offering_id=offering.pk, status="published", actor=actor)
    assert error.value.code == "invalid_transition"
    with pytest.raises(Conflict):
        services.offering_update(offering_id=offering.pk, actor=actor, name="Back")


def test_model_service_blank_key_keeps_the_stored_secret(provider, actor):
    service = ModelServiceFactory(provider=provider)
    services.model_service_update(model_service_id=service.pk, actor=actor, upstream_api_key="", name="Renamed")
    service.refresh_from_db()
    assert service.upstream_api_key == "sk-upstream-secret-never-shown"
    assert service.name == "Renamed"


def test_model_service_slug_is_unique_per_provider(provider, actor):
    ModelServiceFactory(provider=provider, slug="qwen-72b")
    fields = {
        "name": "Q", "slug": "qwen-72b", "model_family": "qwen", "modality": "chat", "context_length": 4096,
        "max_output_tokens": 1024, "precision": "bf16", "input_price_per_1k_tokens": Decimal("0.01"),
        "output_price_per_1k_tokens": Decimal("0.02"), "rate_limit_rpm": 10, "rate_limit_tpm": 1000,
        "residency_zone": "cn-east", "upstream_base_url": "http://127.0.0.1:9/v1",
    }  # fmt: skip
    with pytest.raises(Conflict):
        services.model_service_create(provider=provider, actor=actor, **fields)
    assert ModelService.objects.count() == 1
