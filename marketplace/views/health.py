from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from marketplace.services.health import platform_health


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    report = platform_health()
    return JsonResponse(report, status=200 if report["ok"] else 503)
