"""Model API usage pages: the caller's calls and spend, and a provider's calls and earnings per model service."""

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render

from accounts.decorators import organization_required
from billing.money import round_to_minor_unit
from marketplace.core.csv_export import streaming_csv_response
from marketplace.selectors import model_calls as selectors
from marketplace.views.console import provider_required

PAGE_SIZE = 50


def day_chart(days) -> dict:
    return {
        "labels": [day.isoformat() for day, _calls, _amount in days],
        "calls": [calls for _day, calls, _amount in days],
        "amounts": [str(round_to_minor_unit(amount)) for _day, _calls, amount in days],
    }


def _service_chart(services: list[dict], amount: str) -> dict:
    return {"labels": [row["model"] for row in services], "amounts": [str(row[amount]) for row in services]}


@organization_required
def model_usage(request: HttpRequest) -> HttpResponse:
    organization = request.organization
    by_service = selectors.model_usage_by_service(organization=organization)
    calls = selectors.model_call_list(organization=organization).select_related("api_key")
    context = {
        "by_service": by_service,
        "day_chart": day_chart(selectors.model_usage_by_day(organization=organization)),
        "service_chart": _service_chart(by_service, "cost") if by_service else None,
        "page": Paginator(calls, PAGE_SIZE).get_page(request.GET.get("page")),
    }
    return render(request, "marketplace/model_usage.html", context)


MODEL_USAGE_CSV_HEADER = [
    "time", "call_id", "api_key", "requested_model", "model_service", "zone", "endpoint", "stream", "status",
    "error", "prompt_tokens", "completion_tokens", "tokens_estimated", "cost", "latency_ms", "first_token_ms",
]  # fmt: skip


@organization_required
def model_usage_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Every call's record, newest first (never the prompt or the completion)."""
    organization = request.organization
    rows = (
        [call.created_at.isoformat(), call.call_id, call.api_key_id or "", call.requested_model,
         call.model_service_name, call.residency_zone, call.endpoint, call.stream, call.status_code, call.error_code,
         call.prompt_tokens, call.completion_tokens, call.tokens_estimated, call.cost, call.latency_ms,
         call.first_token_ms or ""]
        for call in selectors.model_call_list(organization=organization).iterator(chunk_size=2000)
    )  # fmt: skip
    return streaming_csv_response(
        filename=f"model-calls-{organization.slug}.csv", header=MODEL_USAGE_CSV_HEADER, rows=rows
    )


@provider_required
def console_model_calls(request: HttpRequest) -> HttpResponse:
    provider = request.organization
    by_service = selectors.provider_model_usage_by_service(provider=provider)
    context = {
        "by_service": by_service,
        "day_chart": day_chart(selectors.provider_model_usage_by_day(provider=provider)),
        "service_chart": _service_chart(by_service, "earned") if by_service else None,
        "page": Paginator(selectors.provider_model_call_list(provider=provider), PAGE_SIZE).get_page(
            request.GET.get("page")
        ),
    }
    return render(request, "marketplace/console_model_calls.html", context)
