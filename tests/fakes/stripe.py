"""An in-process Stripe for tests: the official SDK talks to it through `billing.stripe_client.HTTP_CLIENT`.

It keeps checkout sessions, refunds and Connect transfers, honours `Idempotency-Key` like Stripe (same key → the stored
response, without doing the work again), records every call, and injects faults: a response dropped
after the work was done, a 500, a 409.
"""

import itertools
import json
import threading
import time
from urllib.parse import parse_qsl, urlsplit

import stripe


class FakeStripe(stripe.HTTPClient):
    name = "fake-stripe"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []
        self.sessions: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.transfers: dict[str, dict] = {}
        self._by_idempotency_key: dict[str, tuple[str, int, dict]] = {}
        self._faults: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # --- what tests use ---
    def fail_next(self, fault: str) -> None:
        """'drop' (do the work, lose the response); 'error500', 'conflict409' or 'invalid400' (do nothing)."""
        self._faults.append(fault)

    def pay(self, session_id: str) -> dict:
        session = self.sessions[session_id]
        session.update(payment_status="paid", status="complete", payment_intent=f"pi_test_{next(self._ids)}")
        return session

    def posts(self, path: str) -> list[dict]:
        return [call for call in self.calls if call["method"] == "post" and call["path"] == path]

    # --- the HTTPClient interface ---
    def request(self, method, url, headers, post_data=None, *, _usage=None):
        path = urlsplit(url).path
        params = dict(parse_qsl(post_data or "")) if isinstance(post_data, str) else {}
        key = (headers or {}).get("Idempotency-Key")
        with self._lock:
            self.calls.append({"method": method, "path": path, "params": params, "idempotency_key": key})
            fault = self._faults.pop(0) if self._faults else None
            if fault == "error500":
                return self._error(500, "api_error")
            if fault == "conflict409":
                return self._error(409, "idempotency_error")
            if fault == "invalid400":
                return self._error(400, "invalid_request_error")
            if method == "post" and key in self._by_idempotency_key:
                response = self._by_idempotency_key[key]
            else:
                response = self._route(method, path, params)
                if method == "post" and key and response[1] < 500:
                    self._by_idempotency_key[key] = response
        if fault == "drop":
            raise stripe.APIConnectionError("The connection was reset after the request was sent.")
        return response

    def close(self) -> None:
        pass

    def _route(self, method: str, path: str, params: dict) -> tuple[str, int, dict]:
        if method == "post" and path == "/v1/checkout/sessions":
            number = next(self._ids)
            session = {
                "id": f"cs_test_{number}",
                "object": "checkout.session",
                "url": f"https://checkout.stripe.test/pay/cs_test_{number}",
                "mode": "payment",
                "status": "open",
                "payment_status": "unpaid",
                "amount_total": int(params["line_items[0][price_data][unit_amount]"]),
                "currency": params["line_items[0][price_data][currency]"],
                "client_reference_id": params.get("client_reference_id"),
                "metadata": {"top_up_id": params.get("metadata[top_up_id]")},
                "payment_intent": None,
                "success_url": params.get("success_url"),
            }
            self.sessions[session["id"]] = session
            return self._ok(session)
        if method == "get" and path.startswith("/v1/checkout/sessions/"):
            session = self.sessions.get(path.rsplit("/", 1)[1])
            return self._ok(session) if session else self._error(404, "resource_missing")
        if method == "post" and path == "/v1/refunds":
            refund = {
                "id": f"re_test_{next(self._ids)}",
                "object": "refund",
                "amount": int(params["amount"]),
                "payment_intent": params["payment_intent"],
                "status": "succeeded",
                "metadata": {"refund_id": params.get("metadata[refund_id]")},
            }
            self.refunds[refund["id"]] = refund
            return self._ok(refund)
        if method == "post" and path == "/v1/transfers":
            transfer = {
                "id": f"tr_test_{next(self._ids)}",
                "object": "transfer",
                "amount": int(params["amount"]),
                "destination": params["destination"],
                "metadata": {"payout_id": params.get("metadata[payout_id]")},
            }
            self.transfers[transfer["id"]] = transfer
            return self._ok(transfer)
        return self._error(404, "resource_missing")

    @staticmethod
    def _ok(body: dict) -> tuple[str, int, dict]:
        return json.dumps(body), 200, {"Request-Id": "req_fake"}

    @staticmethod
    def _error(status: int, error_type: str) -> tuple[str, int, dict]:
        body = {"error": {"type": error_type, "message": f"fake Stripe says {status}"}}
        return json.dumps(body), status, {"Request-Id": "req_fake"}


def signed_event(event_type: str, obj: dict, *, secret: str, event_id: str | None = None, at: int | None = None):
    """(payload bytes, Stripe-Signature header) as Stripe signs a webhook delivery."""
    payload = json.dumps(
        {
            "id": event_id or f"evt_{obj['id']}_{event_type}",
            "object": "event",
            "type": event_type,
            "data": {"object": obj},
        }  # fmt: skip
    )
    timestamp = at if at is not None else int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    return payload.encode(), header
