"""The provider console's nodes: make one (its agent's token shown once), see what its agent reports and how it
benchmarks against the datasheet, ask for a benchmark, rotate the token, retire it."""

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.decorators import role_required
from marketplace.core.errors import DomainError
from marketplace.forms import NodeForm
from marketplace.models import Node, Precision
from marketplace.selectors import catalogue
from marketplace.selectors import nodes as selectors
from marketplace.services import nodes as services
from marketplace.views.console import form_error, provider_required


def _token_page(request: HttpRequest, node: Node, token: str) -> HttpResponse:
    """The one time the token is shown, with the command that starts the agent with it."""
    platform_url = request.build_absolute_uri("/").rstrip("/")
    return render(request, "marketplace/console_node_token.html", {"node": node, "token": token, "url": platform_url})


@provider_required
@role_required("provider")
def node_list(request: HttpRequest) -> HttpResponse:
    provider = request.organization
    offerings = catalogue.offering_list_for_provider(provider=provider).exclude(status="retired")
    form = NodeForm(request.POST or None, offerings=offerings)
    if request.method == "POST" and form.is_valid():
        try:
            node, token = services.node_create(
                provider=provider,
                offering_id=form.cleaned_data["offering"].pk,
                name=form.cleaned_data["name"],
                actor=request.user,
            )
        except DomainError as error:
            form_error(form, error)
        else:
            return _token_page(request, node, token)
    nodes = list(selectors.node_list_for_provider(provider=provider))
    reliability = selectors.nodes_reliability(nodes=nodes)
    for node in nodes:
        node.reliability = reliability.get(node.pk)
    context = {"nodes": nodes, "form": form, "offline_after": settings.NODE_OFFLINE_AFTER_SECONDS}
    return render(request, "marketplace/console_nodes.html", context)


def _provider_node(request: HttpRequest, pk: int) -> Node:
    node = selectors.node_list_for_provider(provider=request.organization).filter(pk=pk).first()
    if node is None:
        raise Http404
    return node


def _benchmark_chart(node: Node, benchmark) -> dict:
    """Measured against the datasheet, per precision the offering's accelerator has a figure for."""
    model = node.offering.accelerator
    rows = [(p, model.peak_tflops(p), (benchmark.tflops if benchmark else {}).get(p)) for p in Precision.values]
    rows = [(p, peak, measured) for p, peak, measured in rows if peak or measured]
    return {
        "labels": [p.upper() for p, _peak, _measured in rows],
        "datasheet": [float(peak) if peak else None for _p, peak, _measured in rows],
        "measured": [measured for _p, _peak, measured in rows],
    }


@provider_required
def node_detail(request: HttpRequest, pk: int) -> HttpResponse:
    node = _provider_node(request, pk)
    benchmarks = list(node.benchmarks.all()[:10])
    context = {
        "node": node,
        "benchmarks": benchmarks,
        "chart": _benchmark_chart(node, benchmarks[0] if benchmarks else None),
        "reliability": selectors.node_reliability(node=node),
        "history": node.status_changes.order_by("-at", "-pk")[:20],
        "placements": node.placements.select_related("rental").order_by("-assigned_at")[:10],
        "min_ratio": int(settings.NODE_BENCHMARK_MIN_RATIO * 100),
        "window_days": settings.NODE_RELIABILITY_WINDOW_DAYS,
    }
    return render(request, "marketplace/console_node_detail.html", context)


@provider_required
@role_required("provider")
@require_POST
def node_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    node = _provider_node(request, pk)
    provider, actor = request.organization, request.user
    try:
        if action == "rotate-token":
            node, token = services.node_token_rotate(provider=provider, node_id=node.pk, actor=actor)
            return _token_page(request, node, token)
        if action == "benchmark":
            services.node_benchmark_request(provider=provider, node_id=node.pk)
            messages.success(request, _("The agent benchmarks the node at its next heartbeat."))
        elif action == "retire":
            services.node_retire(provider=provider, node_id=node.pk, actor=actor)
            messages.success(request, _("Node “%(name)s” is retired; its token no longer works.") % {"name": node.name})
        else:
            raise Http404
    except DomainError as error:
        messages.error(request, error.detail)
    return redirect(reverse("console:node-detail", args=[node.pk]))
