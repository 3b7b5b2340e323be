"""Money that staff move in the admin: credit lines, refunds, payout approval.

Each action needs its own permission (`billing.set_credit_line`, `billing.issue_refund`,
`billing.approve_payout`), not just `is_staff`, and leaves a `StaffMoneyAction` row with who, when and what,
written in the same transaction as the money move by the service that moves it. The moves themselves are the
billing services' own (`credit_line_set`, `refund_request`, `charge_refund`, ...): this module only guards and
records them.
"""

import logging
from decimal import Decimal

from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import Organization, User
from billing.models import AccountKind, LedgerAccount, LedgerTransaction, Payout, Refund, StaffMoneyAction, TopUp
from billing.services.ledger import credit_line_set, organization_account
from billing.services.payouts import charge_refund, payout_approve, payout_fail, usage_charge_refund
from billing.services.refunds import refund_request
from marketplace.core.errors import Conflict, PermissionDenied

logger = logging.getLogger(__name__)

Action = StaffMoneyAction.Action


def staff_permission_require(*, actor: User, permission: str) -> None:
    """PermissionDenied unless `actor` is active staff holding `billing.<permission>` (superusers hold all)."""
    if not (actor.is_active and actor.is_staff and actor.has_perm(f"billing.{permission}")):
        raise PermissionDenied(
            _("Your staff account does not have the permission for this money action."),
            code="staff_permission_required",
            permission=f"billing.{permission}",
        )


def _record(*, actor: User, action: str, **fields) -> StaffMoneyAction:
    record = StaffMoneyAction.objects.create(actor=actor, action=action, **fields)
    logger.info(
        "staff money action",
        extra={"actor_id": actor.pk, "action": action, "reference": record.reference, "amount": str(record.amount)},
    )
    return record


@transaction.atomic
def staff_credit_line_set(
    *, actor: User, organization: Organization, limit: Decimal, reason: str = ""
) -> LedgerAccount:
    """Set an organization's credit line (needs `billing.set_credit_line`); the previous limit is recorded.
    Raises PermissionDenied, DomainError (a negative limit, or one below what is already owed)."""
    staff_permission_require(actor=actor, permission="set_credit_line")
    account = organization_account(organization_id=organization.pk, kind=AccountKind.AVAILABLE)
    previous = -LedgerAccount.objects.select_for_update().get(pk=account.pk).minimum_balance
    account = credit_line_set(organization=organization, limit=limit)
    _record(
        actor=actor, action=Action.CREDIT_LINE_SET, organization=organization, reference=f"ledger-account:{account.pk}",
        amount=limit, previous_amount=previous, reason=reason[:255],
    )  # fmt: skip
    return account


@transaction.atomic
def staff_top_up_refund(*, actor: User, top_up_id: int, amount: Decimal, reason: str) -> Refund:
    """Refund part or all of a top-up (needs `billing.issue_refund`); see `refund_request` for its refusals."""
    staff_permission_require(actor=actor, permission="issue_refund")
    refund = refund_request(top_up_id=top_up_id, amount=amount, reason=reason, requested_by=actor)
    top_up = TopUp.objects.only("organization_id").get(pk=top_up_id)
    _record(
        actor=actor, action=Action.TOP_UP_REFUND, organization_id=top_up.organization_id,
        reference=f"top-up:{top_up_id}", amount=refund.amount, reason=refund.reason, result=refund.status,
        ledger_transaction=LedgerTransaction.objects.get(idempotency_key=f"refund:{refund.pk}"),
    )  # fmt: skip
    return refund


def _charge_refund_record(*, actor: User, action: str, txn: LedgerTransaction, amount: Decimal, reason: str) -> None:
    if StaffMoneyAction.objects.filter(ledger_transaction=txn).exists():
        return  # a replayed submission: the refund and its row exist already
    _record(
        actor=actor, action=action, organization_id=txn.organization_id, reference=txn.reference, amount=amount,
        reason=reason[:255], ledger_transaction=txn,
    )  # fmt: skip


@transaction.atomic
def staff_charge_refund(
    *, actor: User, capture_transaction_id: int, amount: Decimal, idempotency_key: str, reason: str
) -> LedgerTransaction:
    """Refund part of a buyer's charge by its capture (needs `billing.issue_refund`); see `charge_refund`."""
    staff_permission_require(actor=actor, permission="issue_refund")
    txn = charge_refund(
        capture_transaction_id=capture_transaction_id, amount=amount, idempotency_key=idempotency_key, reason=reason
    )
    _charge_refund_record(actor=actor, action=Action.CHARGE_REFUND, txn=txn, amount=amount, reason=reason)
    return txn


@transaction.atomic
def staff_usage_charge_refund(
    *, actor: User, charge_id: int, amount: Decimal, idempotency_key: str, reason: str
) -> LedgerTransaction:
    """Refund part of one usage charge (needs `billing.issue_refund`); see `usage_charge_refund`."""
    staff_permission_require(actor=actor, permission="issue_refund")
    txn = usage_charge_refund(charge_id=charge_id, amount=amount, idempotency_key=idempotency_key, reason=reason)
    _charge_refund_record(actor=actor, action=Action.USAGE_CHARGE_REFUND, txn=txn, amount=amount, reason=reason)
    return txn


@transaction.atomic
def staff_payout_approve(*, actor: User, payout_id: int) -> Payout:
    """Confirm a manual payout was sent (needs `billing.approve_payout`); see `payout_approve` (two people above
    the threshold). The row's result is the payout's status after this approval."""
    staff_permission_require(actor=actor, permission="approve_payout")
    payout = payout_approve(payout_id=payout_id, staff=actor)
    _record(
        actor=actor, action=Action.PAYOUT_APPROVE, organization_id=payout.organization_id,
        reference=f"payout:{payout.pk}", amount=payout.amount, result=payout.status,
    )  # fmt: skip
    return payout


@transaction.atomic
def staff_payout_reject(*, actor: User, payout_id: int, reason: str) -> Payout:
    """Reject a manual payout awaiting settlement (needs `billing.approve_payout`): the amount returns to the
    provider's earnings. Raises Conflict for a payout not awaiting settlement."""
    staff_permission_require(actor=actor, permission="approve_payout")
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.status != Payout.Status.AWAITING_APPROVAL:
        raise Conflict(_("Only payouts awaiting manual settlement can be rejected."), code="payout_not_awaiting")
    payout = payout_fail(payout_id=payout.pk, message=reason)
    _record(
        actor=actor, action=Action.PAYOUT_REJECT, organization_id=payout.organization_id,
        reference=f"payout:{payout.pk}", amount=payout.amount, reason=reason[:255], result=payout.status,
    )  # fmt: skip
    return payout
