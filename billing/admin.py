"""Staff see the ledger read-only; money moves only through services (refunds, credit lines, payouts), each
behind its own permission and recorded as a StaffMoneyAction (billing.services.staff)."""

from functools import partial

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied as AdminPermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from billing.forms import CreditLineForm, RefundForm
from billing.models import (
    AccountKind,
    Hold,
    LedgerAccount,
    LedgerTransaction,
    OrganizationQuota,
    Payout,
    Posting,
    ProviderBilling,
    Refund,
    StaffMoneyAction,
    StripeEvent,
    TopUp,
    TransactionKind,
    UsageCharge,
    UsageEvent,
)
from billing.services.staff import (
    staff_charge_refund,
    staff_credit_line_set,
    staff_payout_approve,
    staff_payout_reject,
    staff_top_up_refund,
    staff_usage_charge_refund,
)
from marketplace.core.admin import ReadOnlyAdmin
from marketplace.core.errors import DomainError


def _form_view(model_admin, request, obj, form_class, title: str, apply, *, permission: str):
    """A small staff form on one object, for staff holding `permission` (403 otherwise; the service checks it
    again): valid input goes to `apply`; a refusal is shown on the form."""
    if not request.user.has_perm(permission):
        raise AdminPermissionDenied
    form = form_class(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            message = apply(form.cleaned_data)
        except DomainError as error:
            form.add_error(None, error.detail)
        else:
            model_admin.message_user(request, message, messages.SUCCESS)
            opts = obj._meta
            return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
    context = {**model_admin.admin_site.each_context(request), "title": title, "form": form, "object": obj,
               "opts": obj._meta}  # fmt: skip
    return TemplateResponse(request, "admin/billing/object_form.html", context)


def _charge_refund_view(model_admin, request, obj, *, refund, reference: str, key_prefix: str):
    """Refund part of a charge: each submission is a refund of its own, keyed by how many the charge has had."""

    def apply(data):
        count = LedgerTransaction.objects.filter(reference=reference).count()
        refund(amount=data["amount"], idempotency_key=f"{key_prefix}:{count + 1}", reason=data["reason"])
        return _("%(n)s of the charge refunded to the buyer.") % {"n": data["amount"]}

    return _form_view(
        model_admin, request, obj, RefundForm, _("Refund part of this charge"), apply, permission="billing.issue_refund"
    )


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "organization", "kind", "balance", "minimum_balance"]
    list_filter = ["kind"]
    search_fields = ["organization__name"]
    change_form_template = "admin/billing/ledgeraccount_change_form.html"

    def get_urls(self):
        extra = [
            path("<int:pk>/credit-line/", self.admin_site.admin_view(self.credit_line), name="billing_credit_line")
        ]
        return extra + super().get_urls()

    def credit_line(self, request, pk: int):
        account = get_object_or_404(LedgerAccount, pk=pk, kind=AccountKind.AVAILABLE)

        def apply(data):
            staff_credit_line_set(
                actor=request.user, organization=account.organization, limit=data["limit"], reason=data["reason"]
            )
            return _("Credit line of %(org)s set to %(n)s.") % {"org": account.organization, "n": data["limit"]}

        return _form_view(
            self,
            request,
            account,
            CreditLineForm,
            _("Set the credit line"),
            apply,
            permission="billing.set_credit_line",
        )


class PostingInline(admin.TabularInline):
    model = Posting
    extra = 0
    can_delete = False
    readonly_fields = ["account", "amount"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "organization", "memo", "reference", "idempotency_key"]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "reference", "organization__name"]
    inlines = [PostingInline]
    change_form_template = "admin/billing/ledgertransaction_change_form.html"

    def get_urls(self):
        view = self.admin_site.admin_view(self.refund_charge)
        return [path("<int:pk>/refund-charge/", view, name="billing_charge_refund"), *super().get_urls()]

    def refund_charge(self, request, pk: int):
        capture = get_object_or_404(LedgerTransaction, pk=pk, kind=TransactionKind.CAPTURE)
        refund = partial(staff_charge_refund, actor=request.user, capture_transaction_id=capture.pk)
        return _charge_refund_view(self, request, capture, refund=refund, reference=f"capture:{capture.pk}",
                                   key_prefix=f"charge-refund:{capture.pk}")  # fmt: skip


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["description", "organization", "amount", "captured_amount", "status", "expires_at"]
    list_filter = ["status"]
    search_fields = ["reference", "organization__name"]


class RefundInline(admin.TabularInline):
    model = Refund
    extra = 0
    can_delete = False
    fields = readonly_fields = ["amount", "status", "reason", "stripe_refund_id", "requested_by", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(TopUp)
class TopUpAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "organization", "amount", "mode", "status", "refunded_amount"]
    list_filter = ["status", "mode"]
    search_fields = ["organization__name", "stripe_checkout_session_id", "stripe_payment_intent_id"]
    inlines = [RefundInline]
    change_form_template = "admin/billing/topup_change_form.html"

    def get_urls(self):
        extra = [path("<int:pk>/refund/", self.admin_site.admin_view(self.refund), name="billing_topup_refund")]
        return extra + super().get_urls()

    def refund(self, request, pk: int):
        top_up = get_object_or_404(TopUp, pk=pk)

        def apply(data):
            refund = staff_top_up_refund(
                actor=request.user, top_up_id=top_up.pk, amount=data["amount"], reason=data["reason"]
            )
            return _("Refund of %(n)s recorded (%(status)s).") % {
                "n": refund.amount,
                "status": refund.get_status_display(),
            }

        return _form_view(
            self, request, top_up, RefundForm, _("Refund this top-up"), apply, permission="billing.issue_refund"
        )


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "top_up", "amount", "status", "stripe_refund_id", "requested_by"]
    list_filter = ["status"]


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "event_id", "type", "processed_at"]
    list_filter = ["type"]
    search_fields = ["event_id"]


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    """Manual payouts: staff confirm the bank transfer was sent (two different people above the threshold)."""

    list_display = ["created_at", "organization", "amount", "status", "method", "first_approved_by", "settled_at"]
    list_filter = ["status", "method"]
    search_fields = ["organization__name"]
    actions = ["approve", "reject"]

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_staff  # the actions run services; every field stays read-only

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Payout._meta.fields]

    def has_approve_payout_permission(self, request) -> bool:
        return request.user.has_perm("billing.approve_payout")

    @admin.action(description=_("Approve: the transfer was sent"), permissions=["approve_payout"])
    def approve(self, request, queryset):
        for payout in queryset:
            try:
                payout = staff_payout_approve(actor=request.user, payout_id=payout.pk)
            except DomainError as error:
                self.message_user(request, f"{payout}: {error.detail}", messages.ERROR)
            else:
                self.message_user(request, f"{payout}: {payout.get_status_display()}", messages.SUCCESS)

    @admin.action(description=_("Reject: return the amount to the provider's earnings"), permissions=["approve_payout"])
    def reject(self, request, queryset):
        for payout in queryset.filter(status=Payout.Status.AWAITING_APPROVAL):
            staff_payout_reject(actor=request.user, payout_id=payout.pk, reason=str(_("Rejected by staff")))
        self.message_user(request, _("Rejected payouts returned to earnings."), messages.WARNING)


@admin.register(ProviderBilling)
class ProviderBillingAdmin(admin.ModelAdmin):
    list_display = ["organization", "platform_fee_percent", "stripe_connect_account_id"]
    search_fields = ["organization__name"]
    autocomplete_fields = ["organization"]


@admin.register(OrganizationQuota)
class OrganizationQuotaAdmin(admin.ModelAdmin):
    """Staff set each organization's limits here; what is in use is kept by the rentals service."""

    list_display = ["organization", "max_concurrent_accelerators", "accelerators_in_use", "monthly_spend_cap"]
    search_fields = ["organization__name"]
    autocomplete_fields = ["organization"]
    readonly_fields = ["accelerators_in_use"]


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = ["source", "idempotency_key", "rental", "quantity", "period_start", "period_end", "received_at"]
    search_fields = ["idempotency_key", "source"]
    list_select_related = ["rental"]


@admin.register(UsageCharge)
class UsageChargeAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at", "organization", "rental", "quantity", "rated_amount", "amount", "fee", "events_through",
    ]  # fmt: skip
    list_select_related = ["organization", "rental"]
    change_form_template = "admin/billing/usagecharge_change_form.html"

    def get_urls(self):
        view = self.admin_site.admin_view(self.refund)
        return [path("<int:pk>/refund/", view, name="billing_usage_charge_refund"), *super().get_urls()]

    def refund(self, request, pk: int):
        """Refund part of one rental's charge, whichever capture took it (its own, or a rating run's)."""
        charge = get_object_or_404(UsageCharge, pk=pk)
        refund = partial(staff_usage_charge_refund, actor=request.user, charge_id=charge.pk)
        return _charge_refund_view(self, request, charge, refund=refund, reference=f"usage-charge:{charge.pk}",
                                   key_prefix=f"usage-charge-refund:{charge.pk}")  # fmt: skip


@admin.register(StaffMoneyAction)
class StaffMoneyActionAdmin(ReadOnlyAdmin):
    """Who moved money, when, and what: written by the services with the move itself, never edited."""

    list_display = ["created_at", "actor", "action", "organization", "reference", "amount", "previous_amount",
                    "result", "reason"]  # fmt: skip
    list_filter = ["action"]
    search_fields = ["reference", "actor__email", "organization__name", "reason"]
    list_select_related = ["actor", "organization"]
    date_hierarchy = "created_at"
