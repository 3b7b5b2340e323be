"""`Idempotency-Key` for POSTs that create something (Stripe's semantics).

Same key and same body replays the stored response; the same key with another body is 422; the
same key while the first request still runs is 409. The key row is committed before the view runs
(views are not wrapped in a transaction), so a concurrent request with the key sees it at once.
"""

import functools
import hashlib
import json
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils.timezone import now
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from accounts.models import IdempotencyRecord, Organization
from marketplace.core.errors import Conflict, DomainError, Unprocessable
from marketplace.core.queries import fetch_all

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def request_fingerprint(*, method: str, path: str, body: object) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _claim(*, organization: Organization, key: str, fingerprint: str, moment: datetime) -> IdempotencyRecord | None:
    """Insert the key's record; None if the key is taken. One statement (no savepoint), so a taken key does not
    disturb a transaction around it."""
    record = IdempotencyRecord(organization=organization, key=key, request_fingerprint=fingerprint, locked_at=moment,
                               created_at=moment)  # fmt: skip
    claimed = fetch_all(
        """INSERT INTO accounts_idempotencyrecord (organization_id, key, request_fingerprint, locked_at, created_at)
           VALUES (%s, %s, %s, %s, %s) ON CONFLICT (organization_id, key) DO NOTHING RETURNING id""",
        [organization.pk, key, fingerprint, moment, moment],
    )
    if not claimed:
        return None
    record.pk, record._state.adding = claimed[0][0], False
    return record


def idempotency_begin(*, organization: Organization, key: str, fingerprint: str) -> IdempotencyRecord:
    """Claim the key, or return its finished record to replay. Raises Unprocessable or Conflict."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():  # no control characters: NUL fails in SQL
        raise DomainError(
            _("The Idempotency-Key header must be 1 to %(n)d printable characters.") % {"n": MAX_KEY_LENGTH},
            code="invalid_idempotency_key",
        )
    moment = now()
    claimed = _claim(organization=organization, key=key, fingerprint=fingerprint, moment=moment)
    if claimed is not None:
        return claimed
    expired_before = moment - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    if IdempotencyRecord.objects.filter(organization=organization, key=key, created_at__lt=expired_before).delete()[0]:
        claimed = _claim(organization=organization, key=key, fingerprint=fingerprint, moment=moment)
        if claimed is not None:  # the key had expired (the purge had not run yet): it is new again
            return claimed
    record = IdempotencyRecord.objects.filter(organization=organization, key=key).first()
    if record is None:  # the holder abandoned it a moment ago
        raise Conflict(
            _("A request with this Idempotency-Key is in progress; retry shortly."), code="idempotency_key_in_use"
        )
    if record.request_fingerprint != fingerprint:
        raise Unprocessable(
            _("This Idempotency-Key was already used with a different request."), code="idempotency_key_reused"
        )
    if record.response_status is not None:
        return record
    stale_before = moment - timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)
    taken_over = IdempotencyRecord.objects.filter(
        pk=record.pk, response_status__isnull=True, locked_at__lt=stale_before
    ).update(locked_at=moment)
    if not taken_over:
        raise Conflict(
            _("A request with this Idempotency-Key is in progress; retry shortly."), code="idempotency_key_in_use"
        )
    logger.warning("idempotency key taken over from a stale request", extra={"idempotency_record_id": record.pk})
    record.locked_at = moment
    return record


def idempotency_finish(*, record: IdempotencyRecord, status: int, body: object) -> None:
    """Store the response to replay. Plain SQL: compiling the ORM's UPDATE cost more than running it, on the
    path of every idempotent POST."""
    stored_body = IdempotencyRecord._meta.get_field("response_body").get_db_prep_save(body, connection)
    fetch_all(
        """UPDATE accounts_idempotencyrecord SET response_status = %s, response_body = %s, locked_at = NULL
           WHERE id = %s RETURNING id""",
        [status, stored_body, record.pk],
    )


def idempotency_abandon(*, record: IdempotencyRecord) -> None:
    """Free the key after a failure, so that the client's retry runs the request again."""
    IdempotencyRecord.objects.filter(pk=record.pk, response_status__isnull=True).delete()


def idempotency_purge() -> int:
    deleted, _by_model = IdempotencyRecord.objects.filter(
        created_at__lt=now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    ).delete()
    return deleted


def idempotent(view_method=None, *, redact: tuple[str, ...] = ()):
    """Decorate a viewset's `create` (or another creating POST) to honour `Idempotency-Key`.

    `redact` names response fields that must never be stored (a key's secret): a replay returns them as null.
    """
    if view_method is None:
        return functools.partial(idempotent, redact=redact)

    @functools.wraps(view_method)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view_method(view, request, *args, **kwargs)
        fingerprint = request_fingerprint(method=request.method, path=request.path, body=request.data)
        record = idempotency_begin(organization=request.organization, key=key, fingerprint=fingerprint)
        if record.response_status is not None:
            response = Response(record.response_body, status=record.response_status)
            response["Idempotent-Replayed"] = "true"
            return response
        try:
            response = view_method(view, request, *args, **kwargs)
        except BaseException:
            idempotency_abandon(record=record)
            raise
        if response.status_code >= 500:
            idempotency_abandon(record=record)
        else:
            body = response.data
            if redact and isinstance(body, dict):
                body = {name: (None if name in redact else value) for name, value in body.items()}
            idempotency_finish(record=record, status=response.status_code, body=body)
        return response

    parameter = OpenApiParameter(
        HEADER,
        str,
        OpenApiParameter.HEADER,
        required=False,
        description="Same key and body replays the stored response; the same key with another body is 422.",
    )
    return extend_schema(parameters=[parameter])(wrapper)
