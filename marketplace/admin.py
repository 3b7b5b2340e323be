from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from marketplace.core.admin import ReadOnlyAdmin
from marketplace.models import (
    Application,
    ApplicationReview,
    ApplicationSubscription,
    GatewayPolicy,
    Job,
    ModelCall,
    ModelService,
    Node,
    NodeAccelerator,
    NodeBenchmark,
)
from marketplace.services.nodes import node_review_clear
from marketplace.services.offerings import model_service_alias_approve, model_service_alias_revoke


@admin.register(GatewayPolicy)
class GatewayPolicyAdmin(admin.ModelAdmin):
    """Staff pin an organization or one of its keys to a residency zone and set its gateway rate limits."""

    list_display = ["organization", "api_key", "residency_zone", "requests_per_minute", "tokens_per_minute"]
    search_fields = ["organization__name", "api_key__name", "api_key__prefix"]
    autocomplete_fields = ["organization", "api_key"]


@admin.register(ModelService)
class ModelServiceAdmin(ReadOnlyAdmin):
    """Providers make and price model services in their console; staff look, and approve which join a public alias
    (the bare model slug callers name). Until then a service is callable by its own `provider/slug` name."""

    list_display = ["name", "provider", "slug", "modality", "status", "alias_approved_at", "alias_approved_by"]
    list_filter = ["status", "modality", ("alias_approved_at", admin.EmptyFieldListFilter)]
    list_select_related = ["provider", "alias_approved_by"]
    search_fields = ["name", "slug", "provider__name"]
    exclude = ["upstream_api_key"]
    actions = ["approve_alias", "revoke_alias"]

    @admin.action(description=_("Approve for the model's public alias"))
    def approve_alias(self, request, queryset) -> None:
        for service in queryset.filter(alias_approved_at__isnull=True):
            model_service_alias_approve(model_service_id=service.pk, actor=request.user)
            message = _("“%(name)s” now answers the alias %(alias)s.") % {"name": service.name, "alias": service.slug}
            self.message_user(request, message, messages.SUCCESS)

    @admin.action(description=_("Take out of the model's public alias"))
    def revoke_alias(self, request, queryset) -> None:
        for service in queryset.filter(alias_approved_at__isnull=False):
            model_service_alias_revoke(model_service_id=service.pk, actor=request.user)
            self.message_user(request, _("“%(name)s” left its alias.") % {"name": service.name}, messages.SUCCESS)


@admin.register(ModelCall)
class ModelCallAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at", "organization", "requested_model", "model_service", "status_code", "cost", "usage_clamped"
    ]  # fmt: skip
    list_filter = ["status_code", "endpoint", "residency_zone", "usage_clamped"]
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


class NodeAcceleratorInline(admin.TabularInline):
    model = NodeAccelerator
    extra = 0
    can_delete = False
    readonly_fields = ["index", "name", "uuid", "memory_mib", "driver_version", "cuda_version", "compute_capability",
                       "power_limit_w", "mig_enabled"]  # fmt: skip

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class NodeBenchmarkInline(admin.TabularInline):
    model = NodeBenchmark
    extra = 0
    can_delete = False
    readonly_fields = ["measured_at", "backend", "tflops", "datasheet_ratios", "below_datasheet",
                       "memory_bandwidth_gbps"]  # fmt: skip
    fields = readonly_fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    """Providers make nodes and their agents report them; staff look, and clear nodes held for review."""

    list_display = ["name", "provider", "offering", "status", "needs_review", "verified_at", "last_heartbeat_at"]
    list_filter = ["status", "needs_review"]
    list_select_related = ["provider", "offering"]
    search_fields = ["name", "hostname", "provider__name", "token_prefix"]
    exclude = ["token_hash"]
    inlines = [NodeAcceleratorInline, NodeBenchmarkInline]
    actions = ["clear_review"]

    @admin.action(description=_("Clear review: verified by staff from now"))
    def clear_review(self, request, queryset) -> None:
        for node in queryset.filter(needs_review=True).exclude(status=Node.Status.RETIRED):
            node_review_clear(node_id=node.pk, actor=request.user)
            self.message_user(request, _("“%(name)s” is cleared.") % {"name": node.name}, messages.SUCCESS)


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["pk", "organization", "rental", "node", "status", "exit_code", "created_at"]
    list_filter = ["status"]
    list_select_related = ["organization", "node"]
    search_fields = ["organization__name"]
