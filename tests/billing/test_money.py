from decimal import Decimal

import pytest

from billing.money import AMOUNT_PLACES, amount_field, round_to_minor_unit


@pytest.mark.parametrize(
    ("amount", "rounded"),
    [
        (Decimal("0.005"), Decimal("0.01")),  # half up, not to even
        (Decimal("0.015"), Decimal("0.02")),
        (Decimal("0.00499999"), Decimal("0.00")),
        (Decimal("-0.005"), Decimal("-0.01")),  # half away from zero for refunds too
        (Decimal("12.34500000"), Decimal("12.35")),
    ],
)
def test_round_to_minor_unit_is_half_up(amount, rounded):
    assert round_to_minor_unit(amount) == rounded


def test_amount_field_carries_per_token_prices_exactly():
    field = amount_field()
    assert field.decimal_places == AMOUNT_PLACES == 8
    assert field.to_python("0.00000125") == Decimal("0.00000125")
