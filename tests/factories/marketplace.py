import uuid
from decimal import Decimal

import factory
from django.utils.timezone import now
from factory.django import DjangoModelFactory

from marketplace.core.regions import Region
from marketplace.models import AcceleratorModel, ModelCall, ModelService, Offering, ResidencyZone, Site, SiteTier
from tests.factories.accounts import OrganizationFactory, ProviderProfileFactory


class SiteFactory(DjangoModelFactory):
    class Meta:
        model = Site

    name = factory.Sequence(lambda n: f"Site {n}")
    slug = factory.Sequence(lambda n: f"site-{n}")
    region = Region.YANGTZE_DELTA
    tier = SiteTier.CENTRAL
    residency_zone = ResidencyZone.CN_EAST
    operator = "China Telecom"


def accelerator(slug: str) -> AcceleratorModel:
    """The reference accelerators ship in a data migration; tests use them as they are."""
    return AcceleratorModel.objects.get(slug=slug)


class ProviderOrganizationFactory(OrganizationFactory):
    class Meta:
        skip_postgeneration_save = True

    profile = factory.RelatedFactory(ProviderProfileFactory, factory_related_name="organization")


class OfferingFactory(DjangoModelFactory):
    class Meta:
        model = Offering

    provider = factory.SubFactory(ProviderOrganizationFactory)
    site = factory.SubFactory(SiteFactory)
    accelerator = factory.LazyFunction(lambda: accelerator("nvidia-h100-sxm"))
    name = factory.Sequence(lambda n: f"Offering {n}")
    description = "8-way NVLink node"
    accelerators_per_node = 8
    vcpu_per_node = 128
    ram_gb_per_node = 1024
    disk_gb_per_node = 8000
    network_gbps = 400
    capacity_nodes = 4
    on_demand_price = Decimal("18.50000000")
    status = Offering.Status.PUBLISHED


class ModelServiceFactory(DjangoModelFactory):
    class Meta:
        model = ModelService

    provider = factory.SubFactory(ProviderOrganizationFactory)
    name = factory.Sequence(lambda n: f"Qwen {n}")
    slug = factory.Sequence(lambda n: f"qwen-{n}")
    model_family = "qwen2.5"
    modality = ModelService.Modality.CHAT
    context_length = 32768
    max_output_tokens = 8192
    precision = ModelService.ServedPrecision.BF16
    input_price_per_1k_tokens = Decimal("0.00200000")
    output_price_per_1k_tokens = Decimal("0.00600000")
    rate_limit_rpm = 600
    rate_limit_tpm = 600000
    residency_zone = ResidencyZone.CN_EAST
    upstream_base_url = "http://127.0.0.1:9100/v1"
    upstream_api_key = "sk-upstream-secret-never-shown"
    status = ModelService.Status.PUBLISHED
    alias_approved_at = factory.LazyFunction(now)  # the tests of an unapproved service say so


class ModelCallFactory(DjangoModelFactory):
    """A call's record as the gateway writes it (the gateway's own tests make real ones)."""

    class Meta:
        model = ModelCall

    call_id = factory.LazyFunction(uuid.uuid4)
    organization = factory.SubFactory(OrganizationFactory)
    model_service = factory.SubFactory(ModelServiceFactory)
    requested_model = factory.LazyAttribute(lambda call: call.model_service.slug)
    residency_zone = factory.LazyAttribute(lambda call: call.model_service.residency_zone)
    endpoint = "chat"
    status_code = 200
    prompt_tokens = 100
    completion_tokens = 50
    cost = Decimal("0.00050000")  # 100 × 0.002/1K + 50 × 0.006/1K
    latency_ms = 120
    created_at = factory.LazyFunction(now)
