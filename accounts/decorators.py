"""View decorators shared by every app's pages."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _

from accounts.models import Membership
from accounts.selectors import membership_admits

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def organization_required(view):
    """Pages that act for the signed-in user's active organization; without one, say how to get one."""

    @wraps(view)
    @login_required
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.organization is None:
            messages.info(request, _("Create or join an organization first."))
            return redirect("accounts:organization-list")
        return view(request, *args, **kwargs)

    wrapper.organization_page = True  # walked by tests/api/test_scopes_and_roles.py: a write page needs a scope
    return wrapper


def role_required(scope: str):
    """Pages that change what the API scope `scope` covers: only the roles that the role matrix
    (`Membership.ROLES_BY_SCOPE`, the API's) admits for `scope` may send anything but a read. Put it under
    `organization_required` or `provider_required`, which settle the organization first."""

    def decorate(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in SAFE_METHODS:
                roles = Membership.ROLES_BY_SCOPE[scope]
                if not membership_admits(user=request.user, organization=request.organization, roles=roles):
                    raise PermissionDenied(_("Your role in this organization does not allow this action."))
            return view(request, *args, **kwargs)

        wrapper.page_scope = scope
        return wrapper

    return decorate
