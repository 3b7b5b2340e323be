from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors
from billing.api import serializers
from billing.filters import TopUpFilterSet, TransactionFilterSet
from billing.models import LedgerTransaction, Payout, Statement, TopUp
from billing.services.holds import platform_fee_percent
from billing.services.metering import usage_events_record, usage_events_summary
from billing.services.payouts import payout_request
from billing.services.quotas import quota_usage
from billing.services.topups import topup_start, topup_test_mode
from marketplace.core.api import ApprovedProviderMixin, OrganizationScopedMixin
from marketplace.core.idempotency import idempotent


class WalletView(OrganizationScopedMixin, APIView):
    needs = {"get": "read"}

    @extend_schema(responses=serializers.WalletSerializer)
    def get(self, request: Request) -> Response:
        wallet = selectors.wallet_get(organization=self.organization)
        data = {**vars(wallet), "spendable": wallet.spendable, "test_mode_top_ups": topup_test_mode()}
        return Response(serializers.WalletSerializer(data).data)


class TransactionViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Every ledger transaction that moved the organization's money, with its effect on each balance."""

    needs = {"list": "read", "retrieve": "read"}

    serializer_class = serializers.TransactionSerializer
    filterset_class = TransactionFilterSet
    ordering_fields = ["created_at"]

    def get_queryset(self) -> QuerySet[LedgerTransaction]:
        if getattr(self, "swagger_fake_view", False):
            return LedgerTransaction.objects.none()
        return selectors.transaction_list(organization=self.organization)


class TopUpViewSet(OrganizationScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Top-ups. Creating one returns a Stripe Checkout URL to pay at (or, in test mode, a credited top-up)."""

    needs = {"list": "read", "retrieve": "read", "create": "billing"}

    serializer_class = serializers.TopUpSerializer
    filterset_class = TopUpFilterSet
    ordering_fields = ["created_at", "amount"]

    def get_queryset(self) -> QuerySet[TopUp]:
        if getattr(self, "swagger_fake_view", False):
            return TopUp.objects.none()
        return selectors.top_up_list(organization=self.organization)

    @extend_schema(
        request=serializers.TopUpCreateSerializer,
        responses={
            201: serializers.TopUpSerializer,
            502: OpenApiResponse(description="Stripe refused to open a Checkout Session."),
            503: OpenApiResponse(description="No payment provider is configured, or Stripe is unreachable."),
        },
    )
    @idempotent
    def create(self, request: Request) -> Response:
        payload = serializers.TopUpCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        top_up = topup_start(
            organization=self.organization, amount=payload.validated_data["amount"], created_by=request.user
        )
        return Response(serializers.TopUpSerializer(top_up).data, status=status.HTTP_201_CREATED)


class StatementViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Closed monthly statements, numbered without gaps; exact ledger amounts (round half-up to show)."""

    needs = {"list": "read", "retrieve": "read"}

    serializer_class = serializers.StatementSerializer
    filterset_fields = ["period_start"]

    def get_queryset(self) -> QuerySet[Statement]:
        if getattr(self, "swagger_fake_view", False):
            return Statement.objects.none()
        return selectors.statement_list(organization=self.organization)


class ProviderEarningsView(ApprovedProviderMixin, APIView):
    needs = {"get": "provider"}

    @extend_schema(responses=serializers.EarningsSerializer)
    def get(self, request: Request) -> Response:
        wallet = selectors.wallet_get(organization=self.organization)
        data = {
            "currency": wallet.currency,
            "balance": wallet.earnings,
            "platform_fee_percent": platform_fee_percent(provider=self.organization),
            "payout_minimum": settings.PAYOUT_MIN_AMOUNT,
            "by_day": [
                {"day": day, "earned": amount} for day, amount in selectors.earnings_by_day(provider=self.organization)
            ],
        }
        return Response(serializers.EarningsSerializer(data).data)


class ProviderPayoutViewSet(ApprovedProviderMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Payouts of earnings: requested here, settled by Stripe Connect or by staff."""

    needs = {"list": "provider", "retrieve": "provider", "create": "billing"}

    serializer_class = serializers.PayoutSerializer
    filterset_fields = ["status"]

    def get_queryset(self) -> QuerySet[Payout]:
        if getattr(self, "swagger_fake_view", False):
            return Payout.objects.none()
        return selectors.payout_list(provider=self.organization)

    @extend_schema(
        request=serializers.PayoutCreateSerializer,
        responses={
            201: serializers.PayoutSerializer,
            402: OpenApiResponse(description="The payout exceeds the earnings not yet paid out."),
        },
    )
    @idempotent
    def create(self, request: Request) -> Response:
        payload = serializers.PayoutCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        payout = payout_request(
            provider=self.organization, amount=payload.validated_data["amount"], requested_by=request.user
        )
        return Response(serializers.PayoutSerializer(payout).data, status=status.HTTP_201_CREATED)


class UsageEventView(ApprovedProviderMixin, APIView):
    """Report usage of rentals on your offerings (providers and their agents). Each event gets its own result:
    accepted, duplicate (its idempotency key was seen before: nothing changes) or rejected with a code."""

    needs = {"post": "provider"}

    @extend_schema(
        request=serializers.UsageEventBatchDocSerializer,
        responses={200: serializers.UsageEventBatchResultSerializer},
    )
    def post(self, request: Request) -> Response:
        payload = serializers.UsageEventBatchSerializer(data=request.data, max_length=settings.USAGE_EVENT_BATCH_MAX)
        payload.is_valid(raise_exception=True)
        results = usage_events_record(
            provider=self.organization,
            events=payload.validated_data["events"],
            api_key=getattr(request, "api_key", None),
        )
        return Response(usage_events_summary(results))


class QuotaView(OrganizationScopedMixin, APIView):
    """Each limit of the organization, what uses it now, and when it resets."""

    needs = {"get": "read"}

    @extend_schema(responses=serializers.QuotaSerializer(many=True))
    def get(self, request: Request) -> Response:
        limits = [vars(limit) for limit in quota_usage(organization=self.organization)]
        return Response(serializers.QuotaSerializer(limits, many=True).data)
