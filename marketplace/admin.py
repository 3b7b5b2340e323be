from django.contrib import admin

from marketplace.core.admin import ReadOnlyAdmin
from marketplace.models import GatewayPolicy, ModelCall


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
