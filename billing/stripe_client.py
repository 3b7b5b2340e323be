"""The one seam to Stripe. Everything here returns plain dicts and raises our own errors.

Every POST carries an idempotency key derived from our own row, never the SDK's random one, so that a
retried task or request never charges or refunds twice. Tests put an in-process fake into `HTTP_CLIENT`.
"""

import logging

import stripe
from django.conf import settings
from django.utils.translation import gettext as _

from marketplace.core.errors import DomainError

logger = logging.getLogger(__name__)

# None: the SDK's own HTTP client. Tests assign a `stripe.HTTPClient` subclass that records calls.
HTTP_CLIENT: stripe.HTTPClient | None = None
WEBHOOK_TOLERANCE_SECONDS = 300


class PaymentProviderUnavailable(DomainError):
    """Stripe could not be reached or failed on its side: safe to retry with the same idempotency key."""

    status_code, code = 503, "payment_provider_unavailable"


class PaymentProviderRefused(DomainError):
    """Stripe refused the request (4xx): retrying the same request will not help."""

    status_code, code = 502, "payment_provider_refused"


class InvalidSignature(DomainError):
    status_code, code = 400, "invalid_signature"


def stripe_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def _client() -> stripe.StripeClient:
    # No SDK retries: our callers retry (Celery backoff, or the buyer) with the same idempotency key.
    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, http_client=HTTP_CLIENT, max_network_retries=0)


def _call(operation, *args, **kwargs) -> dict:
    try:
        return operation(*args, **kwargs).to_dict()
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        raise PaymentProviderUnavailable(_("The payment provider is unreachable; try again shortly.")) from error
    except stripe.StripeError as error:
        status = getattr(error, "http_status", None) or 0
        logger.warning("stripe error", extra={"http_status": status, "stripe_code": getattr(error, "code", None)})
        if status >= 500 or status == 409:  # Stripe's own failure, or a concurrent request with our key
            raise PaymentProviderUnavailable(_("The payment provider failed; try again shortly.")) from error
        raise PaymentProviderRefused(
            _("The payment provider refused the request: %(message)s") % {"message": error.user_message or ""}
        ) from error


def checkout_session_create(
    *,
    top_up_id: int,
    amount_minor: int,
    product_name: str,
    success_url: str,
    cancel_url: str,
    customer_email: str,
) -> dict:
    params = {
        "mode": "payment",
        "client_reference_id": str(top_up_id),
        "metadata": {"top_up_id": str(top_up_id)},
        "payment_intent_data": {"metadata": {"top_up_id": str(top_up_id)}},
        "customer_email": customer_email,
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": settings.PLATFORM_CURRENCY.lower(),
                    "unit_amount": amount_minor,
                    "product_data": {"name": product_name},
                },
            }
        ],
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    options = {"idempotency_key": f"topup-checkout:{top_up_id}"}
    return _call(_client().v1.checkout.sessions.create, params=params, options=options)


def checkout_session_retrieve(*, session_id: str) -> dict:
    return _call(_client().v1.checkout.sessions.retrieve, session_id)


def refund_create(*, payment_intent_id: str, amount_minor: int, refund_id: int) -> dict:
    params = {
        "payment_intent": payment_intent_id,
        "amount": amount_minor,
        "metadata": {"refund_id": str(refund_id)},
    }
    return _call(_client().v1.refunds.create, params=params, options={"idempotency_key": f"refund:{refund_id}"})


def transfer_create(*, amount_minor: int, destination: str, payout_id: int) -> dict:
    """A Stripe Connect transfer of a provider's payout to its connected account."""
    params = {
        "amount": amount_minor,
        "currency": settings.PLATFORM_CURRENCY.lower(),
        "destination": destination,
        "metadata": {"payout_id": str(payout_id)},
    }
    return _call(_client().v1.transfers.create, params=params, options={"idempotency_key": f"payout:{payout_id}"})


def webhook_verify(*, payload: bytes, signature: str | None) -> None:
    """Raises InvalidSignature unless `Stripe-Signature` is valid for the endpoint secret and recent."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise InvalidSignature(_("Webhooks are not configured on this platform."))
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature or "", settings.STRIPE_WEBHOOK_SECRET, WEBHOOK_TOLERANCE_SECONDS
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as error:
        raise InvalidSignature(_("The webhook signature is invalid or too old.")) from error
