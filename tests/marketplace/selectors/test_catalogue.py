from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.http import QueryDict

from marketplace.filters import OfferingFilterSet
from marketplace.selectors.catalogue import offering_list, offering_rows, offering_rows_page
from tests.factories.marketplace import OfferingFactory, accelerator


def _names(rows) -> list[str]:
    return [row["name"] for row in rows]


def test_compiled_page_runs_the_query_every_time(db, django_assert_num_queries):
    # given: the page's query was compiled by an earlier request
    OfferingFactory(name="First", on_demand_price=Decimal("10"))
    facets = QueryDict("accelerator=nvidia-h100-sxm")
    assert _names(offering_rows_page(filters=facets, offset=0, limit=21)) == ["First"]
    # when: the catalogue changes
    OfferingFactory(name="Cheaper", on_demand_price=Decimal("5"))
    # then: the same facets see the new row, with one query and no recompiling
    with django_assert_num_queries(1):
        rows = offering_rows_page(filters=facets, offset=0, limit=21)
    assert _names(rows) == ["Cheaper", "First"]


def test_compiled_page_rows_equal_the_selector_rows(db):
    OfferingFactory(name="H100", on_demand_price=Decimal("18.5"), verified_tflops={"bf16": "801.9"})
    OfferingFactory(name="Ascend", accelerator=accelerator("huawei-ascend-910b"), on_demand_price=Decimal("7"))
    facets = QueryDict("sort=price_per_tflops&precision=bf16")
    expected = list(offering_rows(OfferingFilterSet(facets, queryset=offering_list()).qs)[0:21])
    assert offering_rows_page(filters=facets, offset=0, limit=21) == expected
    assert offering_rows_page(filters=facets, offset=0, limit=21) == expected  # compiled the second time


def test_invalid_facets_raise_or_are_ignored_and_never_kept(db):
    OfferingFactory(name="Only")
    facets = QueryDict("min_price=cheap&region=yangtze-delta")
    with pytest.raises(ValidationError) as invalid:
        offering_rows_page(filters=facets, offset=0, limit=21)
    assert list(invalid.value.message_dict) == ["min_price"]
    assert _names(offering_rows_page(filters=facets, offset=0, limit=21, strict=False)) == ["Only"]
    with pytest.raises(ValidationError):
        offering_rows_page(filters=facets, offset=0, limit=21)


def test_filtersets_built_once_per_class_keep_each_requests_values_apart(db):
    OfferingFactory(name="Domestic", accelerator=accelerator("huawei-ascend-910b"))
    OfferingFactory(name="Imported")
    domestic = OfferingFilterSet(QueryDict("domestic=true"), queryset=offering_list())
    everything = OfferingFilterSet(QueryDict(""), queryset=offering_list())
    assert [o.name for o in domestic.qs] == ["Domestic"]
    assert sorted(o.name for o in everything.qs) == ["Domestic", "Imported"]
    assert domestic.filters["domestic"].parent is domestic and everything.filters["domestic"].parent is everything
