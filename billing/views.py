"""Wallet pages and the Stripe webhook endpoint: forms in, service calls, redirects; selectors out, templates."""

from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.decorators import organization_required, role_required
from accounts.selectors import membership_get
from billing import selectors
from billing.filters import TransactionFilterSet
from billing.money import quantize_amount, round_to_minor_unit
from billing.services.holds import platform_fee_percent
from billing.services.payouts import payout_request
from billing.services.quotas import quota_get, quota_usage
from billing.services.topups import topup_confirm_return, topup_start, topup_test_mode
from billing.services.webhooks import stripe_event_receive
from marketplace.core.csv_export import csv_writer, streaming_csv_response
from marketplace.core.errors import DomainError

PAGE_SIZE = 20
RECENT_TOP_UPS = 10


def _can_manage_billing(request: HttpRequest, organization) -> bool:
    membership = membership_get(user=request.user, organization=organization)
    return membership is not None and membership.can_manage_billing


def _chart(series) -> dict:
    """A daily series for Chart.js: ISO dates and amounts as strings (JSON has no decimals)."""
    return {"labels": [day.isoformat() for day, _amount in series], "values": [str(amount) for _day, amount in series]}


@organization_required
def quotas(request: HttpRequest) -> HttpResponse:
    """Each limit, what uses it and when it resets; the spend limits of the organization's API keys."""
    organization = request.organization
    context = {
        "limits": quota_usage(organization=organization),
        "thresholds": quota_get(organization_id=organization.pk).alert_thresholds,
        "keys": organization.api_keys.filter(monthly_spend_limit__isnull=False, revoked_at__isnull=True),
    }
    return render(request, "billing/quotas.html", context)


@organization_required
def wallet(request: HttpRequest) -> HttpResponse:
    organization = request.organization
    filterset = TransactionFilterSet(request.GET, queryset=selectors.transaction_list(organization=organization))
    page = Paginator(filterset.qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "wallet": selectors.wallet_get(organization=organization),
        "filter_form": filterset.form,
        "page": page,
        "query": query.urlencode(),
        "top_ups": selectors.top_up_list(organization=organization)[:RECENT_TOP_UPS],
        "test_mode": topup_test_mode(),
        "can_top_up": _can_manage_billing(request, organization),
        "spend_chart": _chart(selectors.spend_by_day(organization=organization)),
    }
    return render(request, "billing/wallet.html", context)


@organization_required
@role_required("billing")
@require_POST
def wallet_top_up(request: HttpRequest) -> HttpResponse:
    organization = request.organization
    try:
        top_up = topup_start(organization=organization, amount=request.POST.get("amount", ""), created_by=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
        return redirect("billing:wallet")
    if top_up.checkout_url:
        return redirect(top_up.checkout_url)
    messages.success(
        request,
        _("%(amount)s %(currency)s added (test mode: no payment was taken).")
        % {"amount": f"{top_up.amount:.2f}", "currency": settings.PLATFORM_CURRENCY},
    )
    return redirect("billing:wallet")


@organization_required
def top_up_return(request: HttpRequest, pk: int) -> HttpResponse:
    """Stripe sends the buyer here after paying; the top-up is credited now if the webhook has not done it."""
    try:
        top_up = topup_confirm_return(organization=request.organization, top_up_id=pk)
    except DomainError as error:
        messages.error(request, error.detail)
        return redirect("billing:wallet")
    if top_up.status == top_up.Status.SUCCEEDED:
        messages.success(
            request,
            _("Payment received: %(amount)s %(currency)s added to your wallet.")
            % {"amount": f"{top_up.amount:.2f}", "currency": settings.PLATFORM_CURRENCY},
        )
    else:
        messages.info(request, _("Your payment is being processed; the funds appear here once it completes."))
    return redirect("billing:wallet")


CSV_HEADER = ["id", "time", "kind", "memo", "reference", "available_change", "held_change", "earnings_change"]


@organization_required
def transactions_csv(request: HttpRequest) -> HttpResponse:
    """The wallet's transactions as CSV, with the page's filters; streamed, so a long history costs no memory."""
    organization = request.organization
    rows = TransactionFilterSet(request.GET, queryset=selectors.transaction_list(organization=organization)).qs
    changes = ("available_change", "held_change", "earnings_change")
    lines = (
        [txn.pk, txn.created_at.isoformat(), txn.kind, txn.memo, txn.reference,
         *(f"{quantize_amount(getattr(txn, change)):f}" for change in changes)]
        for txn in rows.iterator(chunk_size=1000)
    )  # fmt: skip
    return streaming_csv_response(filename=f"transactions-{organization.slug}.csv", header=CSV_HEADER, rows=lines)


@organization_required
def statement_list(request: HttpRequest) -> HttpResponse:
    organization = request.organization
    statements = selectors.statement_list(organization=organization)
    return render(request, "billing/statement_list.html", {"statements": statements})


@organization_required
def statement_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The printable statement; every figure rounded to the minor unit, half-up, from the exact ledger sums."""
    statement = get_object_or_404(selectors.statement_list(organization=request.organization), pk=pk)
    return render(
        request, "billing/statement_detail.html", {"statement": statement, "currency": settings.PLATFORM_CURRENCY}
    )


@organization_required
def statement_csv(request: HttpRequest, pk: int) -> HttpResponse:
    statement = get_object_or_404(selectors.statement_list(organization=request.organization), pk=pk)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = f"statement-{statement.organization.slug}-{statement.number}-{statement.period_start:%Y-%m}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'

    writer = csv_writer(response)
    writer.writerow(["line", "reference", "amount"])
    rounded = round_to_minor_unit  # the statement boundary: half-up to the fen
    writer.writerow(["opening_balance", "", rounded(statement.opening_balance)])
    writer.writerow(["top_ups", "", rounded(statement.top_ups)])
    for line in statement.charge_lines:
        writer.writerow([f"charge: {line['description']}", line["reference"], rounded(Decimal(line["amount"]))])
    writer.writerow(["charges", "", rounded(statement.charges)])
    writer.writerow(["refunds", "", rounded(statement.refunds)])
    writer.writerow(["adjustments", "", rounded(statement.adjustments)])
    writer.writerow(["closing_balance", "", rounded(statement.closing_balance)])
    return response


@organization_required
def earnings(request: HttpRequest) -> HttpResponse:
    """A provider's or a seller's earnings: balance, a chart by day, payouts and the payout request form."""
    provider = request.organization
    if not selectors.organization_earns(organization=provider):
        messages.info(
            request, _("Earnings open once your organization is an approved provider or sells an application.")
        )
        return redirect("accounts:provider-apply")
    context = {
        "wallet": selectors.wallet_get(organization=provider),
        "fee_percent": platform_fee_percent(provider=provider),
        "payouts": selectors.payout_list(provider=provider)[:PAGE_SIZE],
        "payout_minimum": settings.PAYOUT_MIN_AMOUNT,
        "can_request": _can_manage_billing(request, provider),
        "earnings_chart": _chart(selectors.earnings_by_day(provider=provider)),
    }
    return render(request, "billing/earnings.html", context)


@organization_required
@role_required("billing")
@require_POST
def payout_create(request: HttpRequest) -> HttpResponse:
    provider = request.organization
    try:
        amount = Decimal(request.POST.get("amount", "").strip())
    except InvalidOperation:
        messages.error(request, _("Enter the amount as a number, e.g. 100.00."))
        return redirect("billing:earnings")
    try:
        payout = payout_request(provider=provider, amount=amount, requested_by=request.user)
    except DomainError as error:
        messages.error(request, error.detail)
    else:
        messages.success(request, _("Payout of %(n)s requested.") % {"n": f"{payout.amount:.2f}"})
    return redirect("billing:earnings")


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's deliveries: 400 and nothing written unless the signature is valid and recent."""
    try:
        event = stripe_event_receive(payload=request.body, signature=request.headers.get("Stripe-Signature"))
    except DomainError as error:  # InvalidSignature among them: 400
        return JsonResponse({"error": {"code": error.code, "message": error.detail}}, status=error.status_code)
    return JsonResponse({"received": True, "event": event.event_id})
