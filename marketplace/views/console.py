"""The provider console: approved providers list, price, publish, pause and retire what they sell."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.decorators import role_required
from marketplace.core.errors import DomainError
from marketplace.forms import ModelServiceForm, OfferingForm
from marketplace.selectors import catalogue
from marketplace.services import offerings as services


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

    wrapper.organization_page = True  # walked by tests/api/test_scopes_and_roles.py: a write page needs a scope
    return wrapper


def form_error(form, error: DomainError) -> None:
    """Put a service's refusal next to the field it names, or above the form."""
    fields = error.extra.get("fields") or {}
    placed = False
    for name, problems in fields.items():
        if name in form.fields:
            for problem in problems:
                form.add_error(name, problem)
            placed = True
    if not placed:
        form.add_error(None, error.detail)


def _status_change(request: HttpRequest, set_status) -> HttpResponse:
    """Run a status service for the posted status; say the outcome in the status's own (translated) words."""
    try:
        item = set_status(request.POST.get("status", ""))
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        messages.success(
            request, _("“%(name)s” is now %(status)s.") % {"name": item.name, "status": item.get_status_display()}
        )
    return redirect("console:home")


@provider_required
def console_home(request: HttpRequest) -> HttpResponse:
    provider = request.organization
    offerings = list(catalogue.offering_list_for_provider(provider=provider))
    context = {
        "profile": provider.provider_profile,
        "offerings": offerings,
        "model_services": catalogue.model_service_list_for_provider(provider=provider),
        "totals": {
            "published": sum(1 for o in offerings if o.status == "published"),
            "nodes": sum(o.capacity_nodes for o in offerings if o.status == "published"),
            "rented": sum(o.rented_nodes for o in offerings),
        },
    }
    return render(request, "marketplace/console_home.html", context)


@provider_required
@role_required("provider")
def offering_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    offering = None
    if pk is not None:
        offering = get_object_or_404(catalogue.offering_list_for_provider(provider=request.organization), pk=pk)
    form = OfferingForm(request.POST or None, instance=offering)
    if request.method == "POST" and form.is_valid():
        try:
            if offering is None:
                offering = services.offering_create(
                    provider=request.organization, actor=request.user, **form.cleaned_data
                )
                messages.success(request, _("Draft saved. Publish it when it is ready."))
            else:
                services.offering_update(offering_id=offering.pk, actor=request.user, **form.cleaned_data)
                messages.success(request, _("Offering saved."))
        except DomainError as error:
            form_error(form, error)
        else:
            return redirect("console:home")
    return render(request, "marketplace/console_offering_form.html", {"form": form, "offering": offering})


@provider_required
@role_required("provider")
@require_POST
def offering_status(request: HttpRequest, pk: int) -> HttpResponse:
    offering = get_object_or_404(catalogue.offering_list_for_provider(provider=request.organization), pk=pk)
    return _status_change(
        request, lambda status: services.offering_set_status(offering_id=offering.pk, status=status, actor=request.user)
    )


@provider_required
@role_required("provider")
def model_service_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    service = None
    if pk is not None:
        service = get_object_or_404(catalogue.model_service_list_for_provider(provider=request.organization), pk=pk)
    form = ModelServiceForm(request.POST or None, instance=service)
    if request.method == "POST" and form.is_valid():
        try:
            if service is None:
                services.model_service_create(provider=request.organization, actor=request.user, **form.cleaned_data)
            else:
                services.model_service_update(model_service_id=service.pk, actor=request.user, **form.cleaned_data)
        except DomainError as error:
            form_error(form, error)
        else:
            messages.success(request, _("Model service saved."))
            return redirect("console:home")
    return render(request, "marketplace/console_model_service_form.html", {"form": form, "service": service})


@provider_required
@role_required("provider")
@require_POST
def model_service_status(request: HttpRequest, pk: int) -> HttpResponse:
    service = get_object_or_404(catalogue.model_service_list_for_provider(provider=request.organization), pk=pk)
    return _status_change(
        request,
        lambda status: services.model_service_set_status(
            model_service_id=service.pk, status=status, actor=request.user
        ),
    )
