"""Walk every /api/v1/ route with every key scope and every member role: each action needs the scope and the role
that docs/api.md's matrix names, a key or member without them is refused before anything changes, and a route
that declares no need fails the walk."""

import re
from pathlib import Path

import pytest
from django.urls import URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from accounts.models import ApiKey, Membership
from marketplace.core.api import need_of
from tests.api import test_tenant_isolation
from tests.api.test_tenant_isolation import (
    OBJECT_OF_A,
    allowed_methods,
    api_routes,
    assert_a_unchanged,
    concrete_path,
    resource_of,
)
from tests.factories.accounts import MembershipFactory, api_key_for

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ROLE_ORDER = [role.value for role in Membership.Role]
MATRIX_HEADING = "## Scopes and roles"
GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
tenants = test_tenant_isolation.tenants  # the isolation walk's fixture: two organizations, A owning one of each


class _Request:
    def __init__(self, method: str) -> None:
        self.method = method


def route_needs() -> list[tuple[str, str, object]]:
    """(route, method, Need or None) for every route and method of the API, as the permission resolves them."""
    rows = []
    for route, callback in api_routes():
        for method in allowed_methods(callback):
            view = callback.cls()
            actions = getattr(callback, "actions", None)
            if actions:
                view.action = actions[method.lower()]
            rows.append((route, method, need_of(view, _Request(method))))
    return rows


def roles_text(method: str, need) -> str:
    if method in SAFE_METHODS:
        return "every role"
    roles = need.roles if need.roles is not None else Membership.ROLES_BY_SCOPE[need.scope]
    return ", ".join(role for role in ROLE_ORDER if role in roles)


def matrix_of_the_code() -> set[tuple[str, str, str, str]]:
    return {
        (method, "/api/v1/" + GROUP.sub(r"{\1}", route), need.scope, roles_text(method, need))
        for route, method, need in route_needs()
    }


def matrix_of_the_docs() -> set[tuple[str, str, str, str]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = text.split(MATRIX_HEADING, 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in {"GET", "POST", "PATCH", "PUT", "DELETE"}:
            rows.add(tuple(cells))
    return rows


def need_for(route: str, method: str):
    return next(need for found, found_method, need in route_needs() if (found, found_method) == (route, method))


def walk_requests(tenants: dict) -> list[tuple[str, str, str]]:
    """(method, concrete path, route) for every route and method, on A's own objects."""
    requests = []
    for route, callback in api_routes():
        object_id = OBJECT_OF_A[resource_of(route)](tenants) if resource_of(route) in OBJECT_OF_A else 1
        path = concrete_path(route, pk=object_id, tenants=tenants)
        requests.extend((method, path, route) for method in allowed_methods(callback))
    return requests


def send(client: APIClient, method: str, path: str):
    return getattr(client, method.lower())(path, data={"name": "hijack", "role": "admin"}, format="json")


def test_every_api_action_declares_a_known_scope():
    # given / when
    undeclared = [(route, method) for route, method, need in route_needs() if need is None]
    unknown = {need.scope for _route, _method, need in route_needs() if need is not None} - set(ApiKey.Scope.values)
    # then
    assert undeclared == [], "declare the action's scope in the view's `needs`"
    assert unknown == set()


def test_the_matrix_in_docs_api_md_is_the_one_the_code_enforces():
    assert matrix_of_the_docs() == matrix_of_the_code()


def test_account_administration_needs_admin_and_money_needs_billing():
    # given / when / then: the examples, spelt out
    assert need_for("organizations/(?P<pk>[^/.]+)/invitations/", "POST").scope == "admin"
    assert need_for("organizations/(?P<pk>[^/.]+)/members/(?P<membership_id>\\d+)/", "PATCH").scope == "admin"
    assert need_for("api-keys/", "POST").scope == "admin"
    assert need_for("top-ups/", "POST").scope == "billing"
    assert need_for("apps/(?P<slug>[-a-zA-Z0-9_]+)/subscribe/", "POST").scope == "billing"
    assert need_for("provider/payouts/", "POST").scope == "billing"
    assert all(need.scope != "read" for _r, method, need in route_needs() if method not in SAFE_METHODS | {"POST"})


@pytest.mark.parametrize("scope", ApiKey.Scope.values)
def test_a_key_without_the_actions_scope_is_refused_on_every_route_and_nothing_changes(tenants, scope):
    # given: a key of A's owner that holds only `scope`
    _key, secret = api_key_for(tenants["a"], user=tenants["key_a"].created_by, scopes=[scope])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    refused = 0
    # when / then
    for method, path, route in walk_requests(tenants):
        if need_for(route, method).scope == scope:
            continue
        response = send(client, method, path)
        assert response.status_code == 403, (scope, method, path, response.status_code, response.content)
        assert response.json()["error"]["code"] == "scope_required", (scope, method, path)
        refused += 1
    assert refused > 0
    assert_a_unchanged(tenants)


@pytest.mark.parametrize("scope", ApiKey.Scope.values)
def test_a_key_with_the_actions_scope_alone_passes_the_scope_check(tenants, scope):
    # given
    _key, secret = api_key_for(tenants["a"], user=tenants["key_a"].created_by, scopes=[scope])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    # when / then: whatever else the action answers, it is not refused for the key's scope
    for method, path, route in walk_requests(tenants):
        if need_for(route, method).scope != scope:
            continue
        response = send(client, method, path)
        assert response.status_code != 403 or response.json()["error"]["code"] != "scope_required", (method, path)


@pytest.mark.parametrize("role", [Membership.Role.MEMBER, Membership.Role.BILLING])  # owners and admins may all
def test_a_member_whose_role_the_matrix_does_not_admit_is_refused_every_change_and_nothing_changes(tenants, role):
    # given: a signed-in member of A with `role`
    member = MembershipFactory(organization=tenants["a"], role=role).user
    client = APIClient()
    client.force_login(member)
    refused = 0
    # when / then
    for method, path, route in walk_requests(tenants):
        need = need_for(route, method)
        roles = need.roles if need.roles is not None else Membership.ROLES_BY_SCOPE[need.scope]
        if method in SAFE_METHODS or role in roles:
            continue
        response = send(client, method, path)
        assert response.status_code == 403, (role, method, path, response.status_code, response.content)
        assert response.json()["error"]["code"] == "role_required", (role, method, path)
        refused += 1
    assert refused > 0
    assert_a_unchanged(tenants)


def test_billing_member_cannot_change_a_model_services_upstream_or_mint_node_tokens(tenants):
    # given
    billing = MembershipFactory(organization=tenants["a"], role=Membership.Role.BILLING).user
    client = APIClient()
    client.force_login(billing)
    service, offering = tenants["service_a"], tenants["offering_a"]
    upstream = service.upstream_base_url
    # when
    evil = {"upstream_base_url": "https://evil.example/v1"}
    changed = client.patch(f"/api/v1/provider/model-services/{service.pk}/", evil, format="json")
    minted = client.post("/api/v1/provider/nodes/", {"offering": offering.pk, "name": "rogue"}, format="json")
    rotated = client.post(f"/api/v1/provider/nodes/{tenants['node_a'].pk}/rotate-token/")
    # then
    assert [changed.status_code, minted.status_code, rotated.status_code] == [403, 403, 403]
    assert {changed.json()["error"]["code"], minted.json()["error"]["code"]} == {"role_required"}
    service.refresh_from_db()
    assert service.upstream_base_url == upstream
    assert offering.nodes.count() == 1
    assert_a_unchanged(tenants)


def test_read_only_key_can_neither_subscribe_nor_top_up(tenants):
    # given
    _key, secret = api_key_for(tenants["a"], user=tenants["key_a"].created_by, scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    # when
    subscribed = client.post(f"/api/v1/apps/{tenants['subscription_a'].application.slug}/subscribe/")
    topped_up = client.post("/api/v1/top-ups/", {"amount": "50.00"}, format="json")
    # then
    assert [subscribed.status_code, topped_up.status_code] == [403, 403]
    assert {subscribed.json()["error"]["code"], topped_up.json()["error"]["code"]} == {"scope_required"}
    assert_a_unchanged(tenants)


def test_gateway_only_key_cannot_invite_an_admin(tenants):
    # given
    _key, secret = api_key_for(tenants["a"], user=tenants["key_a"].created_by, scopes=["gateway"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    # when
    response = client.post(
        f"/api/v1/organizations/{tenants['a'].pk}/invitations/",
        {"email": "outsider@example.com", "role": "admin"},
        format="json",
    )
    # then
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_required"
    assert_a_unchanged(tenants)


# Pages that act for an organization and only read: every role may open them. A page that changes something
# declares its scope with `role_required`, and the API's role matrix applies to it.
READ_PAGES = {
    "billing:wallet", "billing:transactions-csv", "billing:statement-list", "billing:statement-detail",
    "billing:statement-csv", "billing:quotas", "billing:earnings", "billing:top-up-return",
    "console:home", "console:rental-list", "console:model-calls", "console:node-detail",
    "seller:home", "rentals:list", "rentals:detail", "rentals:live", "rentals:job", "rentals:usage",
    "rentals:usage-csv", "rentals:still-billing", "model-usage", "model-usage-csv", "storefront:subscription-list",
}  # fmt: skip
PAGE_KWARGS = {
    "billing:wallet-top-up": lambda t: {},
    "billing:payout-create": lambda t: {},
    "console:offering-create": lambda t: {},
    "console:offering-edit": lambda t: {"pk": t["offering_a"].pk},
    "console:offering-status": lambda t: {"pk": t["offering_a"].pk},
    "console:model-service-create": lambda t: {},
    "console:model-service-edit": lambda t: {"pk": t["service_a"].pk},
    "console:model-service-status": lambda t: {"pk": t["service_a"].pk},
    "console:nodes": lambda t: {},
    "console:node-action": lambda t: {"pk": t["node_a"].pk, "action": "rotate-token"},
    "seller:application-create": lambda t: {},
    "seller:application": lambda t: {"pk": t["application_a"].pk},
    "seller:version-create": lambda t: {"pk": t["application_a"].pk},
    "seller:application-status": lambda t: {"pk": t["application_a"].pk},
    "rentals:order": lambda t: {"offering_pk": t["rental_a"].offering_id},
    "rentals:job-submit": lambda t: {"pk": t["rental_a"].pk},
    "rentals:job-cancel": lambda t: {"pk": t["rental_a"].pk, "job_pk": t["job_a"].pk},
    "rentals:action": lambda t: {"pk": t["rental_a"].pk, "action": "cancel"},
    "storefront:application-subscribe": lambda t: {"slug": t["subscription_a"].application.slug},
    "storefront:application-review": lambda t: {"slug": t["subscription_a"].application.slug},
    "storefront:subscription-cancel": lambda t: {"pk": t["subscription_a"].pk},
    "storefront:subscription-price-accept": lambda t: {"pk": t["subscription_a"].pk},
}


def organization_pages() -> dict[str, object]:
    """{URL name: view} for every page that acts for an organization (organization_ or provider_required)."""
    found = {}

    def walk(patterns, namespaces: list[str]) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, namespaces + ([pattern.namespace] if pattern.namespace else []))
            elif getattr(pattern.callback, "organization_page", False):
                found[":".join([*namespaces, pattern.name])] = pattern.callback

    walk(get_resolver().url_patterns, [])
    return found


def test_every_organization_page_that_writes_declares_its_scope():
    # given
    pages = organization_pages()
    scoped = {name for name, view in pages.items() if getattr(view, "page_scope", None) in ApiKey.Scope.values}
    # then: a new page is either a read page or declares the scope of what it changes
    assert set(pages) - scoped == READ_PAGES
    assert scoped == set(PAGE_KWARGS)


@pytest.mark.parametrize("role", [Membership.Role.MEMBER, Membership.Role.BILLING])
def test_a_member_whose_role_the_matrix_does_not_admit_is_refused_every_page_change_and_nothing_changes(
    tenants, client, role
):
    # given
    member = MembershipFactory(organization=tenants["a"], role=role).user
    client.force_login(member)
    refused = []
    # when / then
    for name, view in organization_pages().items():
        if name in READ_PAGES or role in Membership.ROLES_BY_SCOPE[view.page_scope]:
            continue
        response = client.post(reverse(name, kwargs=PAGE_KWARGS[name](tenants)), {"name": "hijack", "status": "x"})
        assert response.status_code == 403, (role, name, response.status_code)
        refused.append(name)
    assert refused
    assert_a_unchanged(tenants)


def test_billing_member_cannot_change_an_upstream_or_mint_a_node_token_through_the_console(tenants, client):
    # given
    billing = MembershipFactory(organization=tenants["a"], role=Membership.Role.BILLING).user
    client.force_login(billing)
    service = tenants["service_a"]
    upstream = service.upstream_base_url
    # when
    edited = client.post(
        reverse("console:model-service-edit", kwargs={"pk": service.pk}),
        {"name": service.name, "upstream_base_url": "https://evil.example/v1"},
    )
    minted = client.post(reverse("console:nodes"), {"offering": tenants["offering_a"].pk, "name": "rogue"})
    # then
    assert [edited.status_code, minted.status_code] == [403, 403]
    service.refresh_from_db()
    assert service.upstream_base_url == upstream
    assert tenants["offering_a"].nodes.count() == 1
