"""Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), in the caller's language."""

import orjson
from django.utils import translation
from django.utils.translation import gettext_lazy as _
from django.utils.translation.trans_real import get_supported_language_variant, parse_accept_lang_header

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    """A call the gateway answers itself. `message` is a lazy translation, filled with `params` when rendered."""

    def __init__(
        self, status: int, code: str, message, *, param: str | None = None, retry_after: int | None = None, **params
    ) -> None:
        super().__init__(code)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.retry_after, self.params = retry_after, params

    def body(self, accept_language: str) -> bytes:
        with translation.override(language_of(accept_language)):
            message = str(self.message) % self.params if self.params else str(self.message)
        error_type = TYPES.get(self.status, "api_error")
        return orjson.dumps({"error": {"message": message, "type": error_type, "param": self.param, "code": self.code}})

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after).encode())] if self.retry_after is not None else []


def language_of(accept_language: str) -> str:
    for code, _quality in parse_accept_lang_header(accept_language):
        try:
            return get_supported_language_variant(code)
        except LookupError:
            continue
    return translation.get_language() or "en"


def invalid(message, *, param: str | None = None, **params) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param=param, **params)


NOT_FOUND = GatewayError(
    404, "not_found", _("Unknown path. The gateway serves /v1/models, /v1/chat/completions and /v1/embeddings.")
)
