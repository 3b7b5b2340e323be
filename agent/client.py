"""The platform's REST API as the agent sees it: JSON over HTTP(S), authenticated by the node token.

A request that cannot reach the platform (connection refused, reset, timed out) or gets a 5xx is retried with
backoff; the agent makes every write idempotent (registration by token, log chunks by number, usage by key), so
a resend after a lost response changes nothing on the platform.
"""

import json
import logging
import time
import urllib.error
import urllib.request

logger = logging.getLogger("agent")


class PlatformError(Exception):
    """The platform refused the request (4xx), or kept failing (5xx) through every retry."""

    def __init__(self, status: int, body: dict):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.status, self.code = status, error.get("code", "")
        super().__init__(f"{status} {self.code}: {error.get('message', body)}")


class Unreachable(Exception):
    """The platform did not answer after every retry."""


class PlatformClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30, retries: int = 5, backoff: float = 1.0):
        self.base_url = base_url.rstrip("/") + "/api/v1/agent/"
        self.token, self.timeout, self.retries, self.backoff = token, timeout, retries, backoff

    def post(self, path: str, payload: dict | None = None) -> dict | None:
        """POST JSON to `path` (relative to /api/v1/agent/); the decoded answer, None for 204."""
        body = json.dumps(payload or {}).encode()
        request = urllib.request.Request(  # noqa: S310 — the platform's URL, given by the provider
            self.base_url + path,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    raw = response.read()
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as error:
                if error.code < 500 or attempt == self.retries:  # a refusal, or a server error that persists
                    raise PlatformError(error.code, _json(error.read())) from None
                reason = f"HTTP {error.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = str(getattr(error, "reason", error))
            if attempt == self.retries:
                raise Unreachable(f"{path}: {reason}")
            logger.warning("platform unreachable (%s); retrying in %.1f s", reason, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30)
        raise AssertionError("unreachable")


def _json(raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except ValueError:
        return {"error": {"message": raw[:200].decode(errors="replace")}}
