"""The app store's pages: the storefront's applications (search, try, subscribe, review) and the seller console."""

from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.decorators import organization_required, role_required
from marketplace.core.errors import DomainError
from marketplace.core.redirects import safe_next
from marketplace.forms import (
    ApplicationListingForm,
    ApplicationReviewForm,
    ApplicationSearchForm,
    ApplicationVersionForm,
)
from marketplace.gateway.directory import try_it_token
from marketplace.models import Application, ApplicationSubscription
from marketplace.selectors import applications as selectors
from marketplace.services import applications as services
from marketplace.views.console import form_error
from marketplace.views.model_calls import day_chart

PAGE_SIZE = 24


def gateway_url(request: HttpRequest) -> str:
    """Where callers reach the gateway: GATEWAY_PUBLIC_URL when it is served elsewhere, else this site's /v1."""
    return settings.GATEWAY_PUBLIC_URL or request.build_absolute_uri("/v1")


def try_it(request: HttpRequest, *, model: str, modality: str) -> dict:
    """The try-it form's settings: the gateway and a token for the signed-in member (none for visitors)."""
    organization = getattr(request, "organization", None)
    token = None
    if request.user.is_authenticated and organization is not None:
        token = try_it_token(user_id=request.user.pk, organization_id=organization.pk)
    return {"gateway": gateway_url(request), "token": token, "model": model, "modality": modality}


def application_list(request: HttpRequest) -> HttpResponse:
    form = ApplicationSearchForm(request.GET or None)
    search = form.cleaned_data if form.is_valid() else {}
    applications = selectors.application_storefront_list(
        query=search.get("q", ""), category=search.get("category", ""), ordering=search.get("sort") or "rating"
    )
    page = Paginator(applications, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "marketplace/application_list.html", {"form": form, "page": page})


def _published(slug: str) -> Application:
    application = selectors.application_get_published(slug=slug)
    if application is None:
        raise Http404
    return application


def application_detail(request: HttpRequest, slug: str) -> HttpResponse:
    application = _published(slug)
    organization = getattr(request, "organization", None)
    context = {
        "application": application,
        "version": application.current_version,
        "reviews": selectors.application_reviews(application=application)[:50],
        "try_it": try_it(request, model=application.gateway_model, modality="chat"),
    }
    if request.user.is_authenticated and organization is not None:
        review = selectors.review_of(application=application, organization=organization)
        context.update(
            subscription=selectors.subscription_open(application=application, organization=organization),
            is_seller=organization.pk == application.seller_id,
            can_review=organization.pk != application.seller_id
            and services.application_used_by(application=application, organization=organization),
            review_form=ApplicationReviewForm(initial={"stars": review.stars, "text": review.text} if review else {}),
        )
    return render(request, "marketplace/application_detail.html", context)


@organization_required
@role_required("billing")
@require_POST
def application_subscribe(request: HttpRequest, slug: str) -> HttpResponse:
    application = _published(slug)
    try:
        services.application_subscribe(application=application, organization=request.organization, user=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        messages.success(request, _("Subscribed to %(name)s.") % {"name": application.name})
    return redirect("storefront:application-detail", slug=slug)


@organization_required
def subscription_list(request: HttpRequest) -> HttpResponse:
    subscriptions = selectors.subscription_list(organization=request.organization)
    page = Paginator(subscriptions, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "marketplace/subscription_list.html", {"page": page})


@organization_required
@role_required("billing")
@require_POST
def subscription_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    subscription = get_object_or_404(
        ApplicationSubscription.objects.select_related("application", "organization"),
        pk=pk,
        organization=request.organization,
    )
    try:
        services.application_subscription_cancel(subscription=subscription, user=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        ends = f"{subscription.period_end:%Y-%m-%d}"
        messages.success(request, _("The subscription ends on %(day)s; it will not renew.") % {"day": ends})
    return redirect(safe_next(request, reverse("storefront:subscription-list")))


@organization_required
@role_required("billing")
@require_POST
def subscription_price_accept(request: HttpRequest, pk: int) -> HttpResponse:
    """Accept the seller's higher monthly price, as the page showed it (the form sends it back)."""
    subscription = get_object_or_404(
        ApplicationSubscription.objects.select_related("organization"), pk=pk, organization=request.organization
    )
    try:
        price = Decimal(request.POST.get("price", ""))
    except InvalidOperation:
        price = None
    try:
        if price is None or not price.is_finite():
            raise DomainError(_("Accept the price the page shows."), code="invalid_price")
        services.application_subscription_price_accept(subscription=subscription, user=request.user, price=price)
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        messages.success(request, _("Accepted: it renews at %(price)s a month.") % {"price": f"{price:.2f}"})
    return redirect(reverse("storefront:subscription-list"))


@organization_required
@role_required("rent")
@require_POST
def application_review(request: HttpRequest, slug: str) -> HttpResponse:
    application = _published(slug)
    form = ApplicationReviewForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Give 1 to 5 stars."))
    else:
        try:
            services.application_review_save(
                application=application, organization=request.organization, user=request.user, **form.cleaned_data
            )
        except DomainError as error:
            messages.error(request, error.detail)
        else:
            messages.success(request, _("Thank you: your review is published."))
    return redirect("storefront:application-detail", slug=slug)


# The seller console: any organization may sell; its owners and admins manage what it sells.


@organization_required
def seller_home(request: HttpRequest) -> HttpResponse:
    seller = request.organization
    applications = list(selectors.seller_application_list(seller=seller).order_by("-created_at"))
    sales = selectors.seller_sales_by_application(seller=seller)
    context = {
        "rows": [(application, sales.get(application.pk)) for application in applications],
        "earnings_chart": day_chart(selectors.seller_earnings_by_day(seller=seller)),
    }
    return render(request, "marketplace/seller_home.html", context)


@organization_required
@role_required("provider")
def seller_application_create(request: HttpRequest) -> HttpResponse:
    listing_form = ApplicationListingForm(request.POST or None, prefix="listing")
    version_form = ApplicationVersionForm(request.POST or None, prefix="version")
    if request.method == "POST" and listing_form.is_valid() and version_form.is_valid():
        listing = dict(listing_form.cleaned_data)
        try:
            application = services.application_create(
                seller=request.organization, user=request.user, slug=listing.pop("slug"), listing=listing,
                version=version_form.cleaned_data,
            )  # fmt: skip
        except DomainError as error:
            named = set(error.extra.get("fields") or {})
            form_error(version_form if named & set(version_form.fields) else listing_form, error)
        else:
            messages.success(request, _("Draft saved: publish it when it is ready."))
            return redirect("seller:application", pk=application.pk)
    context = {"listing_form": listing_form, "version_form": version_form}
    return render(request, "marketplace/seller_application_form.html", context)


def _seller_application(request: HttpRequest, pk: int) -> Application:
    application = selectors.seller_application_get(seller=request.organization, pk=pk)
    if application is None:
        raise Http404
    return application


@organization_required
@role_required("provider")
def seller_application(request: HttpRequest, pk: int) -> HttpResponse:
    application = _seller_application(request, pk)
    form = ApplicationListingForm(request.POST or None, instance=application, prefix="listing")
    if request.method == "POST" and form.is_valid():
        try:
            services.application_update_listing(application=application, user=request.user, listing=form.cleaned_data)
        except DomainError as error:
            form_error(form, error)
        else:
            messages.success(request, _("Listing saved."))
            return redirect("seller:application", pk=pk)
    sales = selectors.seller_sales_by_application(seller=request.organization).get(application.pk)
    context = {
        "application": application,
        "form": form,
        "sales": sales,
        "versions": application.versions.select_related("model_service__provider"),
        "reviews": selectors.application_reviews(application=application)[:50],
        "earnings_chart": day_chart(
            selectors.seller_earnings_by_day(seller=request.organization, application=application)
        ),
    }
    return render(request, "marketplace/seller_application.html", context)


@organization_required
@role_required("provider")
def seller_version_create(request: HttpRequest, pk: int) -> HttpResponse:
    application = _seller_application(request, pk)
    current = application.current_version
    initial = {field: getattr(current, field) for field in services.VERSION_FIELDS if field != "notes"}
    form = ApplicationVersionForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            version = services.application_version_create(
                application=application, user=request.user, version=form.cleaned_data
            )
        except DomainError as error:
            form_error(form, error)
        else:
            messages.success(request, _("Version %(n)d is now current.") % {"n": version.number})
            return redirect("seller:application", pk=pk)
    return render(request, "marketplace/seller_version_form.html", {"application": application, "form": form})


@organization_required
@role_required("provider")
@require_POST
def seller_application_status(request: HttpRequest, pk: int) -> HttpResponse:
    application = _seller_application(request, pk)
    try:
        application = services.application_status_set(
            application=application, user=request.user, status=request.POST.get("status", "")
        )
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        messages.success(
            request,
            _("“%(name)s” is now %(status)s.") % {"name": application.name, "status": application.get_status_display()},
        )
    return redirect("seller:application", pk=pk)
