"""Walk every /api/v1/ route with two organizations' keys: B sees nothing of A and changes nothing of A."""

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.timezone import now

from accounts import services
from accounts.models import ApiKey, Invitation, Membership
from billing.models import LedgerTransaction, Payout, Statement, TopUp
from billing.selectors import wallet_get
from marketplace.models import (
    Application,
    ApplicationSubscription,
    ApplicationVersion,
    Job,
    ModelService,
    Node,
    Offering,
    Rental,
)
from marketplace.services.applications import application_subscribe
from marketplace.services.nodes import node_create
from marketplace.services.rentals import RentalRequest, rental_create
from tests.factories.accounts import MembershipFactory, OrganizationFactory, ProviderProfileFactory, api_key_for
from tests.factories.applications import published_application
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory, ModelServiceFactory, OfferingFactory

API_PREFIX = "api/v1/"
PK_GROUP = re.compile(r"\(\?P<(?:pk|slug)>[^)]*\)")  # an object's own key: its id, or its slug
NESTED_GROUP = re.compile(r"\(\?P<(?!pk>|slug>)(\w+)>[^)]*\)")


def api_routes() -> list[tuple[str, object]]:
    """(route regex or path, callback) for every pattern under /api/v1/."""
    found = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            text = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, text)
            elif isinstance(pattern, URLPattern) and text.startswith(API_PREFIX) and "format" not in text:
                route = text[len(API_PREFIX) :]
                if not route.startswith(AGENT_PREFIX):
                    found.append((route, pattern.callback))

    walk(get_resolver().url_patterns, "")
    return found


def allowed_methods(callback) -> list[str]:
    actions = getattr(callback, "actions", None)
    if actions:  # HEAD and OPTIONS carry no body to check; GET covers HEAD
        return sorted(method.upper() for method in actions if method not in {"head", "options"})
    view_class = callback.cls
    return sorted(m.upper() for m in ("get", "post", "patch", "put", "delete") if hasattr(view_class, m))


@pytest.fixture
def tenants(db):
    organization_a, organization_b = OrganizationFactory(name="Tenant A"), OrganizationFactory(name="Tenant B")
    user_a = MembershipFactory(organization=organization_a).user
    MembershipFactory(organization=organization_b)
    ProviderProfileFactory(organization=organization_a)
    ProviderProfileFactory(organization=organization_b)  # so provider routes answer B with 404, not 403
    offering_a = OfferingFactory(provider=organization_a, status=Offering.Status.DRAFT)
    service_a = ModelServiceFactory(provider=organization_a, status=ModelService.Status.DRAFT)
    key_a, secret_a = api_key_for(organization_a, user=user_a)
    top_up_a = fund(organization_a, "100.00")
    statement_a = Statement.objects.create(
        organization=organization_a, number=1, period_start=date(2026, 10, 1), period_end=date(2026, 11, 1),
        opening_balance=0, top_ups=0, charges=0, refunds=0, adjustments=0, closing_balance=0,
    )  # fmt: skip
    invitation_a, _token = services.invitation_create(
        organization=organization_a, email="invitee@example.com", role="member", invited_by=user_a
    )
    cheap = OfferingFactory(accelerators_per_node=1, on_demand_price=Decimal("1.00"))
    rental_a = rental_create(
        organization=organization_a,
        request=RentalRequest(offering_id=cheap.pk, accelerators=1, starts_at=now() + timedelta(hours=1)),
    )  # holds one hour at ¥1
    model_call_a = ModelCallFactory(organization=organization_a, api_key=key_a, model_service=service_a)
    application_a = published_application(seller=organization_a, slug="tenant-a-draft", publish=False)
    sold_to_a = published_application(slug="sold-to-a", pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="10.00")
    subscription_a = application_subscribe(application=sold_to_a, organization=organization_a, user=user_a)
    node_a, _token = node_create(provider=organization_a, offering_id=offering_a.pk, name="node-a", actor=user_a)
    job_a = Job.objects.create(organization=organization_a, rental=rental_a, command=["true"], time_limit_seconds=60)
    return {
        "node_a": node_a,
        "job_a": job_a,
        "rental_a": rental_a,
        "model_call_a": model_call_a,
        "application_a": application_a,
        "subscription_a": subscription_a,
        "a": organization_a,
        "b": organization_b,
        "key_a": key_a,
        "secret_a": secret_a,
        "membership_id": organization_a.memberships.get(user=user_a).pk,
        "invitation_id": invitation_a.pk,
        "offering_a": offering_a,
        "service_a": service_a,
        "top_up_a": top_up_a,
        "statement_a": statement_a,
        "payout_a": Payout.objects.create(organization=organization_a, amount=Decimal("100.00")),
    }


def concrete_path(route: str, *, pk: int, tenants: dict) -> str:
    path = PK_GROUP.sub(str(pk), route)
    return "/" + API_PREFIX + NESTED_GROUP.sub(lambda match: str(tenants[match.group(1)]), path)


def resource_of(route: str) -> str:
    return PK_GROUP.split(route)[0]


# Shared reference data that every tenant reads alike: no tenant owns a site or an accelerator model.
GLOBAL_CATALOGUE = {"sites/", "accelerators/"}
OBJECT_OF_A = {
    "organizations/": lambda t: t["a"].pk,
    "api-keys/": lambda t: t["key_a"].pk,
    "offerings/": lambda t: t["offering_a"].pk,  # a draft: not in the public catalogue
    "model-services/": lambda t: t["service_a"].pk,
    "provider/offerings/": lambda t: t["offering_a"].pk,
    "provider/model-services/": lambda t: t["service_a"].pk,
    "transactions/": lambda t: LedgerTransaction.objects.get(idempotency_key=f"topup:{t['top_up_a'].pk}").pk,
    "top-ups/": lambda t: t["top_up_a"].pk,
    "statements/": lambda t: t["statement_a"].pk,
    "provider/payouts/": lambda t: t["payout_a"].pk,
    "rentals/": lambda t: t["rental_a"].pk,
    "model-calls/": lambda t: t["model_call_a"].pk,
    "provider/model-calls/": lambda t: t["model_call_a"].pk,  # a call on A's service
    "apps/": lambda t: t["application_a"].slug,  # a draft: not in the storefront
    "app-subscriptions/": lambda t: t["subscription_a"].pk,
    "seller/apps/": lambda t: t["application_a"].pk,
    "provider/nodes/": lambda t: t["node_a"].pk,
    "jobs/": lambda t: t["job_a"].pk,
}
# The provider agent's routes take a node token, never an API key: tests/marketplace/api/test_agent_api.py walks
# them with another provider's node.
AGENT_PREFIX = "agent/"


def test_every_api_route_is_covered_by_the_isolation_walk():
    resources = {resource_of(route) for route, _cb in api_routes() if PK_GROUP.search(route)}
    assert resources == set(OBJECT_OF_A) | GLOBAL_CATALOGUE, "add the new resource to OBJECT_OF_A"


def test_other_organization_gets_404_on_every_detail_route_and_nothing_changes(tenants, api_client_for):
    # given
    client_b = api_client_for(tenants["b"])
    client_a = api_client_for(tenants["a"])
    detail_routes = [
        (route, cb)
        for route, cb in api_routes()
        if PK_GROUP.search(route) and resource_of(route) not in GLOBAL_CATALOGUE
    ]
    assert detail_routes
    # when / then
    for route, callback in detail_routes:
        resource = resource_of(route)
        object_id = OBJECT_OF_A[resource](tenants)
        path = concrete_path(route, pk=object_id, tenants=tenants)
        methods = allowed_methods(callback)
        if "GET" in methods and not resource.startswith(("offerings/", "model-services/", "apps/")):
            assert client_a.get(path).status_code == 200, path  # the same path works for A itself
        for method in methods:
            response = getattr(client_b, method.lower())(path, data={"name": "hijack"}, format="json")
            assert response.status_code == 404, (method, path, response.status_code, response.content)
            assert response.json()["error"]["code"] == "not_found"
    assert_a_unchanged(tenants)


def assert_a_unchanged(tenants: dict) -> None:
    tenants["a"].refresh_from_db()
    assert tenants["a"].name == "Tenant A"
    assert ApiKey.objects.get(pk=tenants["key_a"].pk).revoked_at is None
    assert Membership.objects.get(pk=tenants["membership_id"]).role == Membership.Role.OWNER
    assert Invitation.objects.get(pk=tenants["invitation_id"]).is_pending
    assert list(tenants["a"].invitations.values_list("email", flat=True)) == ["invitee@example.com"]
    tenants["offering_a"].refresh_from_db()
    tenants["service_a"].refresh_from_db()
    assert tenants["offering_a"].name != "hijack" and tenants["offering_a"].status == Offering.Status.DRAFT
    assert tenants["service_a"].name != "hijack" and tenants["service_a"].status == ModelService.Status.DRAFT
    # ¥1 held for the rental, ¥10 paid for a month of an application
    assert wallet_get(organization=tenants["a"]).available == Decimal("89.00")
    application_a, subscription_a = tenants["application_a"], tenants["subscription_a"]
    application_a.refresh_from_db()
    subscription_a.refresh_from_db()
    assert application_a.name != "hijack" and application_a.status == Application.Status.DRAFT
    assert application_a.current_version.number == 1 and not application_a.reviews.exists()
    assert subscription_a.status == ApplicationSubscription.Status.ACTIVE
    assert Rental.objects.get(pk=tenants["rental_a"].pk).status == Rental.Status.PENDING
    assert list(TopUp.objects.values_list("organization", flat=True)) == [tenants["a"].pk]
    node_a = Node.objects.get(pk=tenants["node_a"].pk)
    assert (node_a.name, node_a.status, node_a.token_prefix) == (
        "node-a",
        Node.Status.AWAITING,
        tenants["node_a"].token_prefix,
    )
    assert Job.objects.get(pk=tenants["job_a"].pk).status == Job.Status.QUEUED


def test_nested_objects_of_a_are_404_under_bs_own_organization(tenants, api_client_for):
    # given
    client_b = api_client_for(tenants["b"])
    nested_routes = [(route, cb) for route, cb in api_routes() if NESTED_GROUP.search(route)]
    nested_kinds = {concrete_path(route, pk=0, tenants=tenants).split("/")[5] for route, _cb in nested_routes}
    assert nested_kinds == {"members", "invitations"}
    # when / then
    for route, callback in nested_routes:
        path = concrete_path(route, pk=tenants["b"].pk, tenants=tenants)
        for method in allowed_methods(callback):
            response = getattr(client_b, method.lower())(path, data={"role": "member"}, format="json")
            assert response.status_code == 404, (method, path, response.status_code, response.content)
    assert_a_unchanged(tenants)


def test_other_organization_lists_show_nothing_of_a(tenants, api_client_for):
    # given
    client_b = api_client_for(tenants["b"])
    list_routes = [route for route, _cb in api_routes() if not PK_GROUP.search(route)]
    assert "me/" in list_routes and "organizations/" in list_routes and "api-keys/" in list_routes
    # when / then
    for route in list_routes:
        body = client_b.get("/" + API_PREFIX + route).content.decode()
        assert "Tenant A" not in body, route
        assert tenants["key_a"].prefix not in body, route


def test_session_user_cannot_reach_an_organization_they_do_not_belong_to(tenants, client):
    # given
    outsider = MembershipFactory(organization=tenants["b"]).user
    client.force_login(outsider)
    # when
    response = client.get(f"/api/v1/organizations/{tenants['a'].pk}/members/")
    # then
    assert response.status_code == 404
