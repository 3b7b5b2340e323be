from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

from accounts import selectors as account_selectors
from marketplace.core.redirects import safe_next


class MarketplaceAdminSite(admin.AdminSite):
    """The admin has one door, the sign-in page: its lockout and its two-factor step hold for staff too (the
    admin's own login form counted no failures). With STAFF_REQUIRE_TWO_FACTOR on, a staff session opens the
    admin only once it has passed a second factor; staff without a device are sent to enrol first."""

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and account_selectors.two_factor_satisfied(
            user=request.user, verified=request.user.is_verified()
        )

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        from accounts import views as account_views  # the admin site is built while URLs load: import late

        user = request.user
        if user.is_authenticated and user.is_active and user.is_staff:
            if self.has_permission(request):
                return redirect(safe_next(request, reverse("admin:index")))
            # Signed in with a password only: the second factor, or first a device to give it.
            has_device = account_selectors.two_factor_device_get(user=user) is not None
            step = "accounts:login-verify" if has_device else "accounts:two-factor"
            next_url = safe_next(request, reverse("admin:index"))
            return redirect(f"{reverse(step)}?{urlencode({'next': next_url})}")
        return account_views.login_view(request)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records that only services write (ledgers, usage, call records): staff look, never edit."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
