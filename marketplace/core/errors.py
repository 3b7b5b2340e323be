"""Domain errors: raised by services, mapped once to the API's error shape and to form errors on pages."""


class DomainError(Exception):
    status_code, code = 400, "invalid"

    def __init__(self, detail: str, *, code: str | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.detail, self.extra = str(detail), extra
        if code:
            self.code = code


class NotFound(DomainError):
    status_code, code = 404, "not_found"


class PermissionDenied(DomainError):
    status_code, code = 403, "permission_denied"


class Conflict(DomainError):
    status_code, code = 409, "conflict"


class Unprocessable(DomainError):
    status_code, code = 422, "unprocessable"


class RateLimited(DomainError):
    status_code, code = 429, "rate_limited"

    def __init__(self, detail: str, *, retry_after: int, **extra: object) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after
