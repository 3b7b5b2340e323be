from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _


def provider_required(view):
    """The console is for approved providers; others are sent to the application page."""

    @wraps(view)
    @login_required
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        organization = request.organization
        if not organization or not organization.is_approved_provider:
            messages.info(request, _("The provider console opens once your organization is an approved provider."))
            return redirect("accounts:provider-apply")
        return view(request, *args, **kwargs)

    return wrapper


@provider_required
def console_home(request: HttpRequest) -> HttpResponse:
    return render(request, "marketplace/console_home.html", {"profile": request.organization.provider_profile})
