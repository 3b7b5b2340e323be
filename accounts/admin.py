from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts import services
from accounts.models import ApiKey, Invitation, Membership, Organization, ProviderProfile, User

admin.site.site_header = _("算力商城 administration")


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "full_name"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        (_("Profile"), {"fields": ["full_name", "preferred_language"]}),
        (_("Permissions"), {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        (_("Dates"), {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_personal", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["is_personal"]
    inlines = [MembershipInline]


@admin.register(ProviderProfile)
class ProviderProfileAdmin(admin.ModelAdmin):
    """Staff verify providers here; approval and rejection go through the services (audit fields set there)."""

    list_display = ["legal_name", "organization", "status", "contact_email", "created_at", "reviewed_at"]
    list_filter = ["status"]
    search_fields = ["legal_name", "organization__name", "contact_email"]
    readonly_fields = ["status", "reviewed_by", "reviewed_at", "submitted_by", "created_at", "updated_at"]
    actions = ["approve", "reject"]

    @admin.action(description=_("Approve selected applications"))
    def approve(self, request, queryset):
        for profile in queryset:
            services.provider_approve(profile_id=profile.pk, reviewer=request.user)
        count = queryset.count()
        self.message_user(request, ngettext("%d provider approved.", "%d providers approved.", count) % count)

    @admin.action(description=_("Reject selected applications"))
    def reject(self, request, queryset):
        for profile in queryset:
            services.provider_reject(profile_id=profile.pk, reviewer=request.user, note=profile.review_note)
        count = queryset.count()
        self.message_user(
            request, ngettext("%d provider rejected.", "%d providers rejected.", count) % count, messages.WARNING
        )


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organization", "role", "expires_at", "accepted_at", "revoked_at"]
    search_fields = ["email", "organization__name"]
    exclude = ["token_hash"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "organization", "scopes", "expires_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "prefix", "organization__name"]
    exclude = ["secret_hash"]
    readonly_fields = ["prefix", "organization", "created_by", "last_used_at", "created_at"]
