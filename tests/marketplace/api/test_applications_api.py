"""/api/v1/apps/ (the storefront, reviews, subscribing), /api/v1/app-subscriptions/ and /api/v1/seller/apps/."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace.models import Application, ApplicationVersion
from marketplace.services.applications import application_subscribe
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.applications import published_application
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory, ModelServiceFactory


@pytest.fixture
def service(db):
    return ModelServiceFactory(slug="qwen-api")


def new_application(service, **changes) -> dict:
    body = {
        "slug": "meeting-minutes", "name": "Meeting minutes", "icon": "🗒️", "tagline": "Minutes from a transcript",
        "description": "Paste a transcript.", "category": "writing",
        "version": {"model_service": service.pk, "system_prompt": "Write minutes.", "pricing": "per_call",
                    "price": "0.02000000", "free_trial_calls": 3, "notes": "First"},
    }  # fmt: skip
    return {**body, **changes}


def test_a_seller_makes_versions_and_publishes_an_application_through_the_api(api_client_for, organization, service):
    # given
    client = api_client_for(organization)
    # when
    created = client.post("/api/v1/seller/apps/", new_application(service), format="json")
    application_id = created.json()["id"]
    published = client.post(f"/api/v1/seller/apps/{application_id}/status/", {"status": "published"}, format="json")
    version = {"model_service": service.pk, "pricing": "per_1k_tokens", "price": "0.01", "notes": "Cheaper"}
    versioned = client.post(f"/api/v1/seller/apps/{application_id}/versions/", version, format="json")
    # then
    assert created.status_code == 201 and created.json()["status"] == "draft"
    assert created.json()["version"]["system_prompt"] == "Write minutes."
    assert published.json()["status"] == "published" and published.json()["gateway_model"] == "app:meeting-minutes"
    assert versioned.status_code == 201
    assert versioned.json()["version"] | {"created_at": None} == versioned.json()["version"] | {
        "number": 2, "pricing": "per_1k_tokens", "price": "0.01000000", "notes": "Cheaper", "created_at": None,
    }  # fmt: skip
    # and buyers see it without its system prompt
    listed = api_client_for(OrganizationFactory()).get("/api/v1/apps/").json()["results"]
    assert [row["slug"] for row in listed] == ["meeting-minutes"] and "system_prompt" not in listed[0]["version"]


def test_refusals_are_clear_a_taken_slug_a_member_who_is_not_a_manager_a_draft_model(
    api_client_for, organization, service
):
    # given
    client = api_client_for(organization)
    client.post("/api/v1/seller/apps/", new_application(service), format="json")
    member = MembershipFactory(organization=organization, role="member").user
    draft_service = ModelServiceFactory(status="draft")
    # when
    taken = client.post("/api/v1/seller/apps/", new_application(service), format="json")
    by_member = api_client_for(organization, user=member).post(
        "/api/v1/seller/apps/", new_application(service, slug="other"), format="json"
    )
    on_draft = client.post(
        "/api/v1/seller/apps/",
        new_application(service, slug="third", version={**new_application(service)["version"],
                                                        "model_service": draft_service.pk}),
        format="json",
    )  # fmt: skip
    # then
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "slug_taken")
    assert (by_member.status_code, by_member.json()["error"]["code"]) == (403, "role_required")
    assert on_draft.status_code == 400 and "model_service" in on_draft.json()["error"]["details"]["fields"]["version"]
    assert Application.objects.count() == 1


def test_reviews_need_a_use_and_subscriptions_charge_and_cancel(api_client_for, organization, service):
    # given a subscription application and a buyer with funds
    application = published_application(
        model_service=service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="9.90", slug="tutor"
    )
    fund(organization, "20.00")
    client = api_client_for(organization)
    # when it reviews before using, subscribes twice, then uses and reviews
    early = client.post("/api/v1/apps/tutor/reviews/", {"stars": 4, "text": "nice"}, format="json")
    subscribed = client.post("/api/v1/apps/tutor/subscribe/")
    again = client.post("/api/v1/apps/tutor/subscribe/")
    ModelCallFactory(organization=organization, model_service=service, application=application)
    reviewed = client.post("/api/v1/apps/tutor/reviews/", {"stars": 4, "text": "nice"}, format="json")
    cancelled = client.post(f"/api/v1/app-subscriptions/{subscribed.json()['id']}/cancel/")
    # then
    assert (early.status_code, early.json()["error"]["code"]) == (403, "not_used")
    assert subscribed.status_code == 201 and subscribed.json()["price"] == "9.90000000"
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_subscribed")
    assert reviewed.json()["stars"] == 4
    assert client.get("/api/v1/apps/tutor/").json()["rating"] == 4.0
    assert client.get("/api/v1/apps/tutor/reviews/").json()["results"][0]["text"] == "nice"
    assert cancelled.json()["status"] == "cancelled"


def test_an_organization_without_funds_cannot_subscribe(api_client_for, organization, service):
    # given
    published_application(
        model_service=service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="9.90", slug="tutor"
    )
    # when
    refused = api_client_for(organization).post("/api/v1/apps/tutor/subscribe/")
    # then nothing is half-written
    assert (refused.status_code, refused.json()["error"]["code"]) == (402, "insufficient_funds")
    assert not Application.objects.get(slug="tutor").subscriptions.exists()


def test_application_list_endpoints_do_not_grow_queries_with_rows(api_client_for, organization, owner, service):
    # given
    client = api_client_for(organization)
    published_application(model_service=service, seller=organization, slug="first")
    fund(organization, "100.00")
    subscribed = published_application(
        model_service=service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="1.00", slug="sub-first"
    )
    application_subscribe(application=subscribed, organization=organization, user=owner)

    def queries(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    queries("/api/v1/apps/")  # the key is marked used on its first request
    few = {path: queries(path) for path in ("/api/v1/apps/", "/api/v1/seller/apps/", "/api/v1/app-subscriptions/")}
    # when
    for number in range(6):
        published_application(model_service=service, seller=organization, slug=f"more-{number}")
        other = published_application(
            model_service=service, pricing=ApplicationVersion.Pricing.SUBSCRIPTION, price="1.00", slug=f"sub-{number}"
        )
        application_subscribe(application=other, organization=organization, user=owner)
    # then
    assert {path: queries(path) for path in few} == few
