"""Bench-only routes next to the product's: the catalogue's ceiling (same SQL, JSON built by PostgreSQL; static
bytes) and peer (a textbook DRF list view), and the ingest peer (bulk_create). Never mounted by the product."""

from decimal import Decimal

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.utils.dateparse import parse_datetime
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import generics, permissions, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Organization
from bench.cells import product_sql
from billing.models import UsageEvent
from marketplace.core.api import ApprovedProviderMixin
from marketplace.filters import OfferingFilterSet
from marketplace.models import AcceleratorModel, Offering, Rental, Site

_sql_of_cell: dict[tuple[str, int], tuple[str, tuple]] = {}  # built once per worker, outside the timed path
_static_bodies: dict[tuple[str, int], bytes] = {}


def _ceiling_body(key: str, page: int) -> bytes:
    if (key, page) not in _sql_of_cell:
        _sql_of_cell[(key, page)] = product_sql(key, page)
    sql, params = _sql_of_cell[(key, page)]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(json_agg(t), '[]')::text FROM ({sql}) t", params)
        return cursor.fetchone()[0].encode()


def ceiling_sql(request: HttpRequest, key: str) -> HttpResponse:
    """C_sql: the product's own SQL for the page, with the JSON built by PostgreSQL, and nothing else."""
    return HttpResponse(_ceiling_body(key, int(request.GET["page"])), content_type="application/json")


def ceiling_static(request: HttpRequest, key: str) -> HttpResponse:
    """C_static: the same bytes from memory."""
    page = int(request.GET["page"])
    if (key, page) not in _static_bodies:
        _static_bodies[(key, page)] = _ceiling_body(key, page)
    return HttpResponse(_static_bodies[(key, page)], content_type="application/json")


class PeerSiteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Site
        fields = "__all__"


class PeerAcceleratorSerializer(serializers.ModelSerializer):
    class Meta:
        model = AcceleratorModel
        fields = "__all__"


class PeerProviderSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug"]


class PeerOfferingSerializer(serializers.ModelSerializer):
    site = PeerSiteSerializer()
    accelerator = PeerAcceleratorSerializer()
    provider = PeerProviderSerializer()

    class Meta:
        model = Offering
        fields = "__all__"


class PeerPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100


class PeerOfferingList(generics.ListAPIView):
    """The textbook: nested ModelSerializer, page-number pagination with COUNT, django-filter. No auth."""

    serializer_class = PeerOfferingSerializer
    pagination_class = PeerPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = OfferingFilterSet
    permission_classes = [permissions.AllowAny]
    authentication_classes = []

    def get_queryset(self):
        return (
            Offering.objects.filter(status="published")
            .select_related("site", "accelerator", "provider")
            .order_by("on_demand_price", "pk")
        )


class PeerUsageEvents(ApprovedProviderMixin, APIView):
    """The textbook ingest: one model instance per event, `bulk_create(ignore_conflicts=True)`; no per-event
    result (it cannot tell a new event from a replay), invalid events dropped."""

    needs = {"post": "provider"}  # the product's own rule: a key with the provider scope

    def post(self, request):
        events = request.data["events"]
        rentals = Rental.objects.filter(provider=self.organization, pk__in={e["rental"] for e in events}).in_bulk()
        source = f"provider:{self.organization.pk}"
        objects = [
            UsageEvent(organization_id=rentals[e["rental"]].organization_id, rental_id=e["rental"], source=source,
                       idempotency_key=e["idempotency_key"], dimension=e["dimension"], quantity=Decimal(e["quantity"]),
                       period_start=parse_datetime(e["period_start"]), period_end=parse_datetime(e["period_end"]))
            for e in events
            if e["rental"] in rentals and Decimal(e["quantity"]) > 0
        ]  # fmt: skip
        UsageEvent.objects.bulk_create(objects, ignore_conflicts=True, batch_size=1000)
        return Response({"received": len(events)})


urlpatterns = [
    path("bench/peer/usage-events/", PeerUsageEvents.as_view()),
    path("bench/ceiling/sql/<str:key>", ceiling_sql),
    path("bench/ceiling/static/<str:key>", ceiling_static),
    path("bench/peer/offerings/", PeerOfferingList.as_view()),
    path("", include("marketplace.urls")),
]
