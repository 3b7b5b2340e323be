"""View decorators shared by every app's pages."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _


def organization_required(view):
    """Pages that act for the signed-in user's active organization; without one, say how to get one."""

    @wraps(view)
    @login_required
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.organization is None:
            messages.info(request, _("Create or join an organization first."))
            return redirect("accounts:organization-list")
        return view(request, *args, **kwargs)

    return wrapper
