"""The catalogue bench's cells: realistic storefront filter sets, page sizes 20 and 100, first and deep pages."""

FILTER_SETS = {
    # H100 8-GPU nodes in the Yangtze delta, cheapest first (the most common storefront query)
    "h100-east": {"accelerator": ["nvidia-h100-sxm"], "min_accelerators_per_node": "8", "region": ["yangtze-delta"]},
    # data that must stay in the southwest, domestic chips, under ¥10 per accelerator-hour
    "domestic-sw": {"zone": ["cn-southwest"], "domestic": "true", "max_price": "10"},
    # free text
    "text-a100": {"q": "A100"},
    # fast FP8 capacity that is free now, best price per TFLOPS
    "fp8-value": {"precision": "fp8", "min_tflops": "1000", "available": "true", "sort": "price_per_tflops"},
}
# cell key → (filter set, page number, page size)
CELLS = {
    "h100-east-p1-20": ("h100-east", 1, 20),
    "h100-east-p1-100": ("h100-east", 1, 100),
    "h100-east-p20-20": ("h100-east", 20, 20),
    "domestic-sw-p1-20": ("domestic-sw", 1, 20),
    "text-a100-p1-20": ("text-a100", 1, 20),
    "fp8-value-p1-20": ("fp8-value", 1, 20),
    "fp8-value-p50-100": ("fp8-value", 50, 100),
}


def _filters(key: str):
    """The facets as the product receives them: a QueryDict parsed from the query string."""
    from django.http import QueryDict

    return QueryDict(query_string(key, 1))


def cell_page(key: str) -> int:
    """The cell's page, or the last page where a small (--scale) catalogue has fewer rows."""
    from marketplace.selectors.catalogue import offering_list

    _name, page, size = CELLS[key]
    rows = offering_list(filters=_filters(key)).count()
    return max(1, min(page, -(-rows // size)))


def query_string(key: str, page: int) -> str:
    from urllib.parse import urlencode

    name, _page, size = CELLS[key]
    return urlencode({**FILTER_SETS[name], "page": page, "page_size": size}, doseq=True)


def product_sql(key: str, page: int) -> tuple[str, tuple]:
    """The SQL of the product's page for the cell, as the product's selector and FilterSet build it."""
    from marketplace.selectors.catalogue import offering_list, offering_rows

    _name, _page, size = CELLS[key]
    qs = offering_rows(offering_list(filters=_filters(key)))[(page - 1) * size : page * size]
    return qs.query.sql_with_params()
