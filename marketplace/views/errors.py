"""Error pages: JSON in the API's error shape under /api/, HTML elsewhere."""

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views import defaults

from marketplace.core.api import request_too_large_body


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/v1/"))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's answer to a SuspiciousOperation outside a DRF view (a view's own is the API's exception handler)."""
    if not _wants_json(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(request_too_large_body(), status=413)
    body = {"error": {"code": "bad_request", "message": _("The request is invalid."), "details": {}}}
    return JsonResponse(body, status=400)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": {"code": "not_found", "message": _("Not found."), "details": {}}}, status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        body = {"error": {"code": "server_error", "message": _("Something went wrong on our side."), "details": {}}}
        return JsonResponse(body, status=500)
    return render(request, "500.html", status=500)
