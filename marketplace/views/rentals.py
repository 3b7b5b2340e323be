"""Rental pages: order from an offering, follow a rental live, stop it; usage, spend and what still bills."""

from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.decorators import organization_required, role_required
from billing.money import round_to_minor_unit
from marketplace.core.csv_export import streaming_csv_response
from marketplace.core.errors import DomainError
from marketplace.forms import JobForm, RentalOrderForm
from marketplace.models import Job, Rental
from marketplace.selectors import catalogue
from marketplace.selectors import nodes as node_selectors
from marketplace.selectors import rentals as selectors
from marketplace.services import jobs as job_services
from marketplace.services import rentals as services
from marketplace.views.console import form_error, provider_required

PAGE_SIZE = 20
# While a rental can still change on its own, its status fragment polls (htmx) this often.
POLL_SECONDS = 5
JOB_LOG_POLL_SECONDS = 2  # a running job's log
JOBS_SHOWN = 10


@organization_required
@role_required("rent")
@require_POST
def rental_order(request: HttpRequest, offering_pk: int) -> HttpResponse:
    offering = get_object_or_404(catalogue.offering_list(), pk=offering_pk)
    form = RentalOrderForm(request.POST, offering=offering)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(errors))
        return redirect("storefront:offering-detail", pk=offering.pk)
    order = services.RentalRequest(offering_id=offering.pk, **form.cleaned_data)
    try:
        rental = services.rental_create(organization=request.organization, request=order, created_by=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
        return redirect("storefront:offering-detail", pk=offering.pk)
    messages.success(request, _("Rental #%(id)d ordered.") % {"id": rental.pk})
    return redirect("rentals:detail", pk=rental.pk)


@organization_required
def rental_list(request: HttpRequest) -> HttpResponse:
    rentals = selectors.rental_list(organization=request.organization)
    status = request.GET.get("status", "")
    if status in Rental.Status.values:
        rentals = rentals.filter(status=status)
    page = Paginator(rentals, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "status": status,
        "statuses": Rental.Status.choices,
        "query": urlencode({"status": status}) if status else "",  # pages keep the filter
    }
    return render(request, "marketplace/rental_list.html", context)


def _rental_or_404(request: HttpRequest, pk: int) -> Rental:
    rental = selectors.rental_get(organization=request.organization, pk=pk)
    if rental is None:
        raise Http404
    return rental


def _chart(rental: Rental) -> dict:
    series = selectors.rental_charge_series(rental=rental)
    return {
        "labels": [moment.isoformat() for moment, _hours, _charged in series],
        "hours": [str(hours) for _moment, hours, _charged in series],
        "charged": [str(round_to_minor_unit(charged)) for _moment, _hours, charged in series],
    }


@organization_required
def rental_detail(request: HttpRequest, pk: int, job_form: JobForm | None = None) -> HttpResponse:
    rental = _rental_or_404(request, pk)
    placements = list(node_selectors.rental_placements(rental=rental))
    context = {
        "rental": rental,
        "timeline": selectors.rental_timeline(rental=rental),
        "chart": _chart(rental),
        "poll_seconds": POLL_SECONDS,
        "billed_statuses": [Rental.Status(s).label for s in Rental.BILLED_STATUSES],
        "placements": placements,
        "jobs": list(node_selectors.rental_jobs(rental=rental)[:JOBS_SHOWN]) if placements else [],
        "job_form": job_form or JobForm(),
        "log_poll_seconds": JOB_LOG_POLL_SECONDS,
    }
    return render(request, "marketplace/rental_detail.html", context, status=400 if job_form else 200)


@organization_required
@role_required("rent")
@require_POST
def job_submit(request: HttpRequest, pk: int) -> HttpResponse:
    form = JobForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            job = job_services.job_submit(
                organization=request.organization,
                rental_id=pk,
                command=form.cleaned_data["command"],
                environment=form.cleaned_data["environment"],
                files=form.cleaned_data["files"],
                time_limit_seconds=form.cleaned_data["time_limit_minutes"] * 60,
                created_by=request.user,
            )
        except DomainError as error:
            if error.status_code == 404:
                raise Http404 from None
            form_error(form, error)
        else:
            messages.success(request, _("Job #%(id)d is queued; its node picks it up within seconds.") % {"id": job.pk})
            return redirect(f"{reverse('rentals:detail', args=[pk])}#job-{job.pk}")
    return rental_detail(request, pk, job_form=form)


def _job_or_404(request: HttpRequest, pk: int, job_pk: int) -> Job:
    job = node_selectors.job_list(organization=request.organization).filter(pk=job_pk, rental_id=pk).first()
    if job is None:
        raise Http404
    return job


@organization_required
def job_log(request: HttpRequest, pk: int, job_pk: int) -> HttpResponse:
    """The htmx fragment of a job: its status and its whole log so far; it polls while the job runs."""
    job = _job_or_404(request, pk, job_pk)
    context = {"job": job, "log": node_selectors.job_log(job=job), "log_poll_seconds": JOB_LOG_POLL_SECONDS}
    return render(request, "marketplace/partials/_job.html", context)


@organization_required
@role_required("rent")
@require_POST
def job_cancel(request: HttpRequest, pk: int, job_pk: int) -> HttpResponse:
    job = _job_or_404(request, pk, job_pk)
    try:
        job_services.job_cancel(organization=request.organization, job_id=job.pk)
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        messages.success(request, _("Job #%(id)d is being stopped.") % {"id": job.pk})
    return redirect(f"{reverse('rentals:detail', args=[pk])}#job-{job.pk}")


@organization_required
def rental_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The htmx fragment that the detail page polls: status, charges and the chart's data; the actions and the
    timeline elsewhere on the page come along as out-of-band swaps."""
    rental = _rental_or_404(request, pk)
    context = {
        "rental": rental,
        "chart": _chart(rental),
        "timeline": selectors.rental_timeline(rental=rental),
        "poll_seconds": POLL_SECONDS,
        "oob": True,
    }
    return render(request, "marketplace/partials/_rental_live.html", context)


RENTAL_ACTIONS = {"stop": services.rental_stop, "cancel": services.rental_cancel, "resume": services.rental_resume}


@organization_required
@role_required("rent")
@require_POST
def rental_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in RENTAL_ACTIONS:
        raise Http404
    try:
        rental = RENTAL_ACTIONS[action](rental_id=pk, organization=request.organization, actor=request.user)
    except DomainError as error:
        if error.status_code == 404:
            raise Http404 from None
        messages.error(request, error.detail)
    else:
        status = rental.get_status_display()
        messages.success(request, _("Rental #%(id)d is now %(status)s.") % {"id": pk, "status": status})
    return redirect("rentals:detail", pk=pk)


@organization_required
def usage(request: HttpRequest) -> HttpResponse:
    organization = request.organization
    days = selectors.usage_by_day(organization=organization)
    context = {
        "by_offering": selectors.usage_by_offering(organization=organization),
        "chart": {
            "labels": [day.isoformat() for day, _hours, _amount in days],
            "hours": [str(hours) for _day, hours, _amount in days],
            "spend": [str(round_to_minor_unit(amount)) for _day, _hours, amount in days],
        },
        "offering_chart": None,
    }
    if context["by_offering"]:
        context["offering_chart"] = {
            "labels": [row["offering"] for row in context["by_offering"]],
            "spend": [str(round_to_minor_unit(row["amount"])) for row in context["by_offering"]],
        }
    return render(request, "marketplace/usage.html", context)


USAGE_CSV_HEADER = ["time", "rental", "offering", "period_start", "period_end", "accelerator_seconds", "rated",
                    "charged"]  # fmt: skip


@organization_required
def usage_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Every usage charge: when, which rental and offering, accelerator-seconds, rated and charged amounts."""
    organization = request.organization
    rows = (
        [charge.created_at.isoformat(), charge.rental_id, charge.rental.offering.name, charge.period_start.isoformat(),
         charge.period_end.isoformat(), charge.quantity, charge.rated_amount, charge.amount]
        for charge in selectors.usage_charge_list(organization=organization).iterator(chunk_size=2000)
    )  # fmt: skip
    return streaming_csv_response(filename=f"usage-{organization.slug}.csv", header=USAGE_CSV_HEADER, rows=rows)


@organization_required
def still_billing(request: HttpRequest) -> HttpResponse:
    billing = selectors.still_billing(organization=request.organization)
    return render(request, "marketplace/still_billing.html", {"billing": billing})


@provider_required
def console_rentals(request: HttpRequest) -> HttpResponse:
    provider = request.organization
    page = Paginator(selectors.provider_rental_list(provider=provider), PAGE_SIZE).get_page(request.GET.get("page"))
    utilisation = selectors.offering_utilisation(provider=provider)
    context = {
        "page": page,
        "utilisation": utilisation,
        "utilisation_chart": [{"labels": row["labels"], "values": row["values"]} for row in utilisation],
    }
    return render(request, "marketplace/console_rentals.html", context)
