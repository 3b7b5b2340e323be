from django.contrib import admin

from marketplace.core.admin import ReadOnlyAdmin
from marketplace.models import Application, ApplicationReview, ApplicationSubscription, GatewayPolicy, ModelCall


@admin.register(GatewayPolicy)
class GatewayPolicyAdmin(admin.ModelAdmin):
    """Staff pin an organization or one of its keys to a residency zone and set its gateway rate limits."""

    list_display = ["organization", "api_key", "residency_zone", "requests_per_minute", "tokens_per_minute"]
    search_fields = ["organization__name", "api_key__name", "api_key__prefix"]
    autocomplete_fields = ["organization", "api_key"]


@admin.register(ModelCall)
class ModelCallAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organization", "requested_model", "model_service", "status_code", "cost"]
    list_filter = ["status_code", "endpoint", "residency_zone"]
    list_select_related = ["organization", "model_service"]
    search_fields = ["call_id", "organization__name", "requested_model"]
    date_hierarchy = "created_at"


@admin.register(Application)
class ApplicationAdmin(ReadOnlyAdmin):
    """Sellers make and publish applications through their console; staff look."""

    list_display = ["name", "slug", "seller", "category", "status", "rating_count", "published_at"]
    list_filter = ["status", "category"]
    list_select_related = ["seller"]
    search_fields = ["name", "slug", "seller__name"]


@admin.register(ApplicationSubscription)
class ApplicationSubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["application", "organization", "price", "status", "period_end", "end_reason"]
    list_filter = ["status", "end_reason"]
    list_select_related = ["application", "organization"]
    search_fields = ["application__name", "organization__name"]


@admin.register(ApplicationReview)
class ApplicationReviewAdmin(ReadOnlyAdmin):
    list_display = ["application", "organization", "stars", "updated_at"]
    list_filter = ["stars"]
    list_select_related = ["application", "organization"]
    search_fields = ["application__name", "organization__name", "text"]
