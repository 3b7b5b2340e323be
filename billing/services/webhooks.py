"""Stripe webhooks: verify the signature, store each event id once, process it once.

Nothing is written before the signature checks out. The event row is inserted with ON CONFLICT DO NOTHING
and then locked, so concurrent deliveries of one event queue behind the first and find it processed.
"""

import json
import logging

from django.db import transaction
from django.utils.timezone import now
from django.utils.translation import gettext as _

from billing import stripe_client
from billing.models import StripeEvent
from billing.services.refunds import refund_record_from_stripe
from billing.services.topups import topup_apply_checkout_session, topup_fail_checkout_session
from marketplace.core.errors import DomainError

logger = logging.getLogger(__name__)


def _charge_refunded(charge: dict) -> None:
    refunds = (charge.get("refunds") or {}).get("data") or []
    for stripe_refund in refunds:
        refund_record_from_stripe(payment_intent_id=charge.get("payment_intent") or "", stripe_refund=stripe_refund)


HANDLERS = {
    "checkout.session.completed": lambda obj: topup_apply_checkout_session(session=obj),
    "checkout.session.async_payment_succeeded": lambda obj: topup_apply_checkout_session(session=obj),
    "checkout.session.async_payment_failed": lambda obj: topup_fail_checkout_session(session=obj),
    "checkout.session.expired": lambda obj: topup_fail_checkout_session(session=obj),
    "charge.refunded": _charge_refunded,
}


def stripe_event_receive(*, payload: bytes, signature: str | None) -> StripeEvent:
    """Verify, store once and process a webhook delivery. Raises InvalidSignature (nothing written)."""
    stripe_client.webhook_verify(payload=payload, signature=signature)
    try:
        event = json.loads(payload)
        event_id, event_type, obj = event["id"], event["type"], event["data"]["object"]
    except (ValueError, KeyError, TypeError) as error:
        raise DomainError(_("The event is not a Stripe event."), code="invalid_event") from error
    with transaction.atomic():
        StripeEvent.objects.bulk_create(
            [StripeEvent(event_id=event_id, type=event_type, payload=event)], ignore_conflicts=True
        )
        stored = StripeEvent.objects.select_for_update().get(event_id=event_id)
        if stored.processed_at is not None:
            return stored
        handler = HANDLERS.get(event_type)
        if handler is not None:
            handler(obj)
        stored.processed_at = now()
        stored.save(update_fields=["processed_at"])
    logger.info("stripe event processed", extra={"event_id": event_id, "event_type": event_type})
    return stored
