"""Applications in the app store, as a seller makes them (through the service, so every rule applies)."""

from decimal import Decimal

from accounts.models import Organization
from marketplace.models import Application, ApplicationCategory, ApplicationVersion, ModelService
from marketplace.services.applications import application_create, application_status_set
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.marketplace import ModelServiceFactory


def published_application(
    *,
    seller: Organization | None = None,
    model_service: ModelService | None = None,
    slug: str = "contract-reviewer",
    pricing: str = ApplicationVersion.Pricing.PER_CALL,
    price: Decimal | str = "0.05",
    free_trial_calls: int = 0,
    system_prompt: str = "You review contracts. Answer in one paragraph.",
    max_tokens: int | None = 64,
    publish: bool = True,
) -> Application:
    """A published application of `seller` (a new organization whose owner made it, by default)."""
    seller = seller or OrganizationFactory()
    owner = MembershipFactory(organization=seller, role="owner").user
    application = application_create(
        seller=seller,
        user=owner,
        slug=slug,
        listing={
            "name": slug.replace("-", " ").title(),
            "icon": "📄",
            "tagline": "Reads a contract and lists its risks",
            "description": "Paste a contract; get the clauses that need a lawyer's eye.",
            "category": ApplicationCategory.KNOWLEDGE,
        },
        version={
            "notes": "First version",
            "model_service": model_service or ModelServiceFactory(),
            "system_prompt": system_prompt,
            "temperature": Decimal("0.20"),
            "max_tokens": max_tokens,
            "pricing": pricing,
            "price": Decimal(price),
            "free_trial_calls": free_trial_calls,
        },
    )
    if publish:
        application = application_status_set(application=application, user=owner, status=Application.Status.PUBLISHED)
    application.owner = owner
    return application
