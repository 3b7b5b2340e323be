from django.utils.translation import gettext as _
from rest_framework import serializers

from billing.models import LedgerTransaction, Payout, Statement, TopUp
from marketplace.core.api import money_field


class WalletSerializer(serializers.Serializer):
    currency = serializers.CharField(read_only=True)
    available = money_field(read_only=True, help_text="Funds free to spend.")
    held = money_field(read_only=True, help_text="Funds reserved for running work (rentals, gateway calls).")
    credit_limit = money_field(read_only=True, help_text="Approved credit line: available may go down to minus this.")
    spendable = money_field(read_only=True, help_text="Available plus the unused credit line.")
    earnings = money_field(read_only=True, help_text="Provider earnings not yet paid out.")
    test_mode_top_ups = serializers.BooleanField(
        read_only=True, help_text="Top-ups credit at once without payment (development only)."
    )


class TransactionSerializer(serializers.ModelSerializer):
    available_change = money_field(read_only=True)
    held_change = money_field(read_only=True)
    earnings_change = money_field(read_only=True)

    class Meta:
        model = LedgerTransaction
        fields = ["id", "kind", "memo", "reference", "created_at", "available_change", "held_change", "earnings_change"]
        read_only_fields = fields


class TopUpSerializer(serializers.ModelSerializer):
    checkout_url = serializers.SerializerMethodField(help_text="Where the buyer pays (Stripe Checkout) while pending.")

    class Meta:
        model = TopUp
        fields = ["id", "amount", "mode", "status", "checkout_url", "refunded_amount", "created_at", "credited_at"]
        read_only_fields = fields

    def get_checkout_url(self, top_up: TopUp) -> str | None:
        return top_up.checkout_url if top_up.status == TopUp.Status.PENDING and top_up.checkout_url else None


class TopUpCreateSerializer(serializers.Serializer):
    # A string, validated by the service: money never passes through a float.
    amount = serializers.CharField(help_text='Amount in the platform currency, at most two decimals, e.g. "100.00".')


class StatementChargeLineSerializer(serializers.Serializer):
    reference = serializers.CharField()
    description = serializers.CharField()
    amount = money_field()


class StatementSerializer(serializers.ModelSerializer):
    charge_lines = StatementChargeLineSerializer(many=True, read_only=True)

    class Meta:
        model = Statement
        fields = [
            "id", "number", "period_start", "period_end", "opening_balance", "top_ups", "charges", "refunds",
            "adjustments", "closing_balance", "charge_lines", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class EarningsDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    earned = money_field()


class EarningsSerializer(serializers.Serializer):
    currency = serializers.CharField()
    balance = money_field(help_text="Earnings not yet paid out (captured charges less the platform fee).")
    platform_fee_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    payout_minimum = money_field()
    by_day = EarningsDaySerializer(many=True, help_text="The last 30 days, oldest first.")


class PayoutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Payout
        fields = ["id", "amount", "status", "method", "failure_message", "created_at", "settled_at"]
        read_only_fields = fields


class PayoutCreateSerializer(serializers.Serializer):
    amount = money_field(min_value=0)


class UsageEventInputSerializer(serializers.Serializer):
    """One reported event (documentation only: each event is validated on its own and gets its own result)."""

    rental = serializers.IntegerField(help_text="A rental on one of your offerings metered by reports.")
    dimension = serializers.ChoiceField(choices=["accelerator_seconds"])
    quantity = serializers.CharField(help_text="Positive decimal, at most 8 places, as a string.")
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    idempotency_key = serializers.CharField(max_length=200, help_text="Unique per provider: a resend is a no-op.")


class ParsedJSONField(serializers.Field):
    """A value of the parsed request body as it is (a JSONField would serialise it again only to prove it can)."""

    def to_internal_value(self, data: object) -> object:
        return data

    def to_representation(self, value: object) -> object:
        return value


class UsageEventBatchSerializer(serializers.Serializer):
    # A list of 1 to max_length items, checked as a whole: each event is checked on its own by the service, and a
    # ListField would run a field's validation per item first.
    events = ParsedJSONField()

    def __init__(self, *args, max_length: int = 1000, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_length = max_length

    def validate_events(self, events: object) -> list:
        if not isinstance(events, list) or not 1 <= len(events) <= self.max_length:
            raise serializers.ValidationError(
                _("Send a list of 1 to %(n)d events.") % {"n": self.max_length}, code="invalid_batch"
            )
        return events


class UsageEventBatchDocSerializer(serializers.Serializer):
    events = UsageEventInputSerializer(many=True, help_text="1 to USAGE_EVENT_BATCH_MAX events (default 1000).")


class UsageEventResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"])
    idempotency_key = serializers.CharField()
    code = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)


class UsageEventBatchResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = UsageEventResultSerializer(many=True)


class QuotaSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    limit = serializers.DecimalField(max_digits=24, decimal_places=8, allow_null=True)
    current = serializers.DecimalField(max_digits=24, decimal_places=8)
    resets_at = serializers.DateTimeField(allow_null=True)
