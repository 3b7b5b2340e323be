"""API conventions shared by every app: one error shape, pagination, organization scoping, scopes."""

import copy
import logging
from dataclasses import dataclass

import orjson
from django import forms
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404
from django.utils.translation import gettext as _
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import exceptions, permissions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import remove_query_param, replace_query_param

from billing.money import AMOUNT_DIGITS, AMOUNT_PLACES
from marketplace.core.errors import DomainError, RateLimited
from marketplace.core.queries import MAX_OFFSET

logger = logging.getLogger(__name__)

ERROR_STATUSES = {
    "400": "The request is invalid.",
    "401": "Missing, invalid, expired or revoked credentials.",
    "403": "The key lacks the scope, or the member the role, for this action.",
    "404": "Not found in the caller's organization.",
    "429": "Too many requests.",
}
WRITE_ERROR_STATUSES = {
    "409": "Conflicts with the current state, or the same Idempotency-Key is in flight.",
    "422": "The Idempotency-Key was used with a different request.",
    "415": "The request body's media type is not one the endpoint accepts (JSON, form or multipart).",
    "413": "The request body is over the upload limit (`request_too_large`).",
}


class FieldsBuiltOnce:
    """A serializer whose fields are built once per class. DRF builds them on every instantiation (a ModelSerializer
    from the model: a fifth of the Python time of `POST /api/v1/rentals/`); each instance gets copies of the first
    build: shallow ones (binding sets only the copy's own attributes; DRF's deep copy rebuilds every field from its
    arguments, as costly as the build) except for fields with fields of their own (nested serializers, a list's
    child), which are bound to their parent and copied whole. For serializers whose fields keep no state between
    uses, which holds for DRF's fields."""

    def get_fields(self):
        built = type(self).__dict__.get("_built_fields")  # this class's own: a subclass has fields of its own
        if built is None:
            built = super().get_fields()
            type(self)._built_fields = built
        return {
            name: copy.deepcopy(field) if _has_own_fields(field) else copy.copy(field) for name, field in built.items()
        }


def _has_own_fields(field: serializers.Field) -> bool:
    return isinstance(field, serializers.BaseSerializer) or hasattr(field, "child")


class ReadOnlyModelSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    """An output-only ModelSerializer whose fields are built from the model once per class."""


class SlugRefField(serializers.SlugRelatedField):
    """A reference to an object by its slug. Characters no slug holds and the database cannot even compare (NUL on
    PostgreSQL, a lone surrogate anywhere: the lookup would fail as a server error) are refused as not found before
    the database sees them."""

    def to_internal_value(self, data):
        if isinstance(data, str) and not data.isprintable():
            self.fail("does_not_exist", slug_name=self.slug_field, value=ascii(data)[1:-1])
        return super().to_internal_value(data)


def money_field(**kwargs) -> serializers.DecimalField:
    """Money in the API: a string with the ledger's 8 places, never a float."""
    return serializers.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, **kwargs)


def _error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def request_too_large_body() -> dict:
    """A body over `DATA_UPLOAD_MAX_MEMORY_SIZE`: answered 413 in the error shape, by a DRF view or by Django."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    message = _("The request body is over the limit of %(bytes)d bytes.") % {"bytes": limit}
    return _error_body("request_too_large", message, {"limit_bytes": limit})


def _code_of(exc: exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Every error of the API as `{"error": {"code", "message", "details"}}` with the right status."""
    if isinstance(exc, DomainError):
        response = Response(_error_body(exc.code, exc.detail, exc.extra), status=exc.status_code)
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else exc.extra.get("retry_after")
        if retry_after is not None:
            response["Retry-After"] = str(retry_after)
        return response
    if isinstance(exc, DjangoValidationError):
        details = {"fields": exc.message_dict} if hasattr(exc, "error_dict") else {"errors": exc.messages}
        return Response(_error_body("invalid", _("The request is invalid."), details), status=400)
    if isinstance(exc, RequestDataTooBig):
        return Response(request_too_large_body(), status=413)
    if isinstance(exc, OverflowError | DataError):
        # A value that passed its field's validation but does not fit the database (an integer past 64 bits: PG
        # "bigint out of range", SQLite's driver OverflowError): the caller's input, so a 400, not a server error.
        # DRF rolls back the request's atomic block, if any, only for the exceptions it handles: so here too.
        from rest_framework.views import set_rollback

        set_rollback()
        logger.info("value out of range", extra={"error": str(exc).splitlines()[0] if str(exc) else ""})
        message = _("A value in the request is out of range.")
        return Response(_error_body("invalid", message, {"errors": [message]}), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(_("Not found."))
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    # Imported here: DRF imports this module while rest_framework.views is still loading.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)  # sets WWW-Authenticate and Retry-After headers
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        details = {"fields": exc.detail} if isinstance(exc.detail, dict) else {"errors": exc.detail}
        response.data = _error_body("invalid", _("The request is invalid."), details)
    elif isinstance(exc, exceptions.Throttled):
        response.data = _error_body("rate_limited", str(exc.detail), {"retry_after": exc.wait})
    else:
        response.data = _error_body(_code_of(exc), str(exc.detail))
    return response


class FastJSONRenderer(JSONRenderer):
    """JSON through orjson, for hot endpoints whose data is JSON-native already (money and times as strings).

    Anything else (a lazy translation in an error message, a stray Decimal) is written as its string.
    """

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b"" if data is None else orjson.dumps(data, default=str)


class StandardPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class CountlessPagination(PageNumberPagination):
    """Page numbers without COUNT(*): one extra row tells whether a next page exists.

    For large public lists (the catalogue), where counting every match costs more than the page itself.
    """

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def page_window(self, request) -> tuple[int, int]:
        """(offset, limit) of the requested page, with one extra row that tells whether a next page exists."""
        self.request = request
        self.size = self.get_page_size(request)
        raw_number = request.query_params.get(self.page_query_param, "1")
        # A page whose offset no database takes (past a 64-bit integer) cannot hold rows: the answer of a page
        # past the last one, not the database's overflow error.
        if not raw_number.isdigit() or not 1 <= int(raw_number) <= MAX_OFFSET // self.size:
            raise exceptions.NotFound(_("Invalid page."))
        self.number = int(raw_number)
        return (self.number - 1) * self.size, self.size + 1

    def paginate_rows(self, rows: list) -> list:
        """The page of a window fetched at `page_window`."""
        if self.number > 1 and not rows:
            raise exceptions.NotFound(_("Invalid page."))
        self.has_next = len(rows) > self.size
        return rows[: self.size]

    def paginate_queryset(self, queryset, request, view=None):
        offset, limit = self.page_window(request)
        return self.paginate_rows(list(queryset[offset : offset + limit]))

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        return replace_query_param(self.request.build_absolute_uri(), self.page_query_param, self.number + 1)

    def get_previous_link(self) -> str | None:
        if self.number == 1:
            return None
        url = self.request.build_absolute_uri()
        if self.number == 2:
            return remove_query_param(url, self.page_query_param)
        return replace_query_param(url, self.page_query_param, self.number - 1)

    def get_paginated_response(self, data) -> Response:
        return Response({"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter's backend, which refuses an invalid filter value (400 `invalid`), and which here also refuses a
    list's query parameter that no filter, pagination or ordering reads (400 `unknown_parameter`): a misspelt or
    unsupported filter (`?created_after=…`) would otherwise answer the unfiltered list as if it were filtered.
    Only lists: a detail action may read parameters of its own."""

    def get_filterset(self, request, queryset, view):
        filterset = super().get_filterset(request, queryset, view)
        if filterset is not None and getattr(view, "action", None) == "list":
            query_params_refuse_unknown(request=request, view=view, filterset_class=type(filterset))
        return filterset


_known_query_params: dict[type, frozenset[str]] = {}


def query_params_refuse_unknown(*, request, view, filterset_class) -> None:
    """Raise 400 `unknown_parameter` for a query parameter the list view reads nowhere. The names a view knows are
    worked out once per view class (a view's `filterset_fields` make a new FilterSet class on every request)."""
    known = _known_query_params.get(type(view))
    if known is None:
        known = _known_query_params[type(view)] = _query_param_names(view, filterset_class)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise DomainError(
            _("Unknown query parameter: %(names)s.") % {"names": ", ".join(unknown)},
            code="unknown_parameter",
            parameters=unknown,
            known=sorted(known),
        )


def _query_param_names(view, filterset_class) -> frozenset[str]:
    names = {api_settings.URL_FORMAT_OVERRIDE, *getattr(view, "extra_query_params", ())}
    for name, filter_ in filterset_class.base_filters.items():
        widget = filter_.field.widget
        if hasattr(widget, "suffixes"):  # django-filter's range widgets: `<name>_min`, `<name>_after`, …
            names.update(f"{name}_{suffix}" if suffix else name for suffix in widget.suffixes)
        elif isinstance(widget, forms.MultiWidget):
            names.update(f"{name}{suffix}" for suffix in widget.widgets_names)
        else:
            names.add(name)
    paginator = getattr(view, "paginator", None)
    parts = [paginator] if paginator is not None else []
    parts += [backend() for backend in view.filter_backends if not issubclass(backend, DjangoFilterBackend)]
    for part in parts:  # pagination's and ordering's parameters, as they document them
        names.update(parameter["name"] for parameter in part.get_schema_operation_parameters(view))
    return frozenset(names)


@dataclass(frozen=True)
class Need:
    """What an API action needs: a key's `scope`, and one of `roles` for a member who changes something (the
    scope's row of `Membership.ROLES_BY_SCOPE` unless given; reads are open to every role)."""

    scope: str
    roles: frozenset[str] | None = None


def need_of(view, request) -> Need | None:
    """The Need a view declares for this request's action in `view.needs` ({action or method: scope or Need, or a
    {method: scope or Need} for an action that answers several methods}).

    Viewsets are keyed by action (`list`, `create`, `revoke`), plain views by method (`get`, `post`); HEAD is GET's.
    None: the view declares nothing for it, and the permission refuses (a new route cannot slip through unscoped).
    """
    action = getattr(view, "action", None) or request.method.lower()
    if action == "head":
        action = "get"
    need = getattr(view, "needs", {}).get(action)
    if isinstance(need, dict):  # an action that answers several methods: {method: scope or Need}
        need = need.get(request.method.lower())
    return Need(need) if isinstance(need, str) else need


class IsOrganizationMember(permissions.BasePermission):
    """The caller acts for an organization; the action's declared Need (`view.needs`) is met.

    An API key needs the action's scope; a member who changes something needs a role that the Need admits; an
    action that declares no Need is refused to everyone. OPTIONS (a description of the endpoint) needs no scope.
    """

    message = _("Sign in, or send an API key, to act for an organization.")

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            raise exceptions.NotAuthenticated()
        if not getattr(request, "organization", None):
            raise exceptions.PermissionDenied(_("You are not a member of any organization."), code="no_organization")
        if request.method == "OPTIONS" or getattr(view, request.method.lower(), None) is None:
            return True  # a description of the endpoint, or a method it lacks (DRF answers 405): nothing runs
        need = need_of(view, request)
        if need is None:
            logger.error("api_action_without_need", extra={"view": type(view).__name__, "method": request.method})
            raise exceptions.PermissionDenied(
                _("This action is not available to API callers."), code="scope_undeclared"
            )
        api_key = getattr(request, "api_key", None)
        if api_key is not None and need.scope not in api_key.scopes:
            raise exceptions.PermissionDenied(
                _("This API key lacks the “%(scope)s” scope.") % {"scope": need.scope}, code="scope_required"
            )
        if request.method not in permissions.SAFE_METHODS:
            self._require_role(request, need)
        return True

    @staticmethod
    def _require_role(request, need: Need) -> None:
        from accounts.models import Membership
        from accounts.selectors import membership_admits

        roles = need.roles if need.roles is not None else Membership.ROLES_BY_SCOPE[need.scope]
        if not membership_admits(user=request.user, organization=request.organization, roles=roles):
            raise exceptions.PermissionDenied(
                _("Your role in this organization does not allow this action."), code="role_required"
            )


class OrganizationScopedMixin:
    """Views read `self.organization`; `get_queryset` must select through it, so other tenants get 404."""

    @property
    def organization(self):
        return self.request.organization


class ApprovedProviderMixin(OrganizationScopedMixin):
    """Provider endpoints: the organization needs an approved provider profile (keys, the scopes their `needs` name)."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not request.organization.is_approved_provider:
            raise exceptions.PermissionDenied(
                _("Only approved providers can use provider endpoints."), code="provider_required"
            )


def schema_add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular hook: document the shared error shape on every operation."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "description": "Machine-readable error code."},
                    "message": {"type": "string", "description": "Human-readable, translated message."},
                    "details": {"type": "object", "additionalProperties": True},
                },
            }
        },
    }
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            statuses = dict(ERROR_STATUSES)
            if method in {"post", "put", "patch", "delete"}:
                statuses.update(WRITE_ERROR_STATUSES)
            for status_code, description in statuses.items():
                operation["responses"].setdefault(status_code, {"description": description, "content": error_ref})
            for status_code, response in operation["responses"].items():  # errors a view declares itself
                if status_code.isdigit() and int(status_code) >= 400:
                    response.setdefault("content", error_ref)
    return result
