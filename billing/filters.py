"""FilterSets shared by the wallet page and the API."""

import django_filters
from django.utils.translation import gettext_lazy as _

from billing.models import LedgerTransaction, TopUp, TransactionKind


class TransactionFilterSet(django_filters.FilterSet):
    kind = django_filters.MultipleChoiceFilter(choices=TransactionKind.choices, label=_("Kind"), distinct=False)
    date_from = django_filters.DateFilter(field_name="created_at", lookup_expr="date__gte", label=_("From"))
    date_to = django_filters.DateFilter(field_name="created_at", lookup_expr="date__lte", label=_("To"))

    class Meta:
        model = LedgerTransaction
        fields = ["kind", "date_from", "date_to"]


class TopUpFilterSet(django_filters.FilterSet):
    class Meta:
        model = TopUp
        fields = ["status", "mode"]
