"""Money is Decimal with a fixed scale, never float; rounding to the minor unit only at boundaries."""

from decimal import ROUND_HALF_UP, Decimal

from django.db import models
from django.db.models import Sum

AMOUNT_DIGITS, AMOUNT_PLACES = 24, 8  # 8 places carry per-token prices exactly
MINOR_UNIT = Decimal("0.01")  # CNY fen


def amount_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, **kwargs)


def amount_sum(expression: str, **kwargs) -> Sum:
    """SUM of an amount column, typed as an amount. Exact on PostgreSQL; SQLite adds decimals as floats, so
    whoever compares or prints a sum passes it through `quantize_amount` first."""
    return Sum(expression, output_field=amount_field(), **kwargs)


def round_to_minor_unit(amount: Decimal) -> Decimal:
    """Top-up, statement and payout boundaries: half-up to the minor unit (0.005 → 0.01)."""
    return amount.quantize(MINOR_UNIT, rounding=ROUND_HALF_UP)


AMOUNT_QUANTUM = Decimal(1).scaleb(-AMOUNT_PLACES)


def quantize_amount(amount: Decimal) -> Decimal:
    """To the stored scale (8 places), half-up: how computed amounts (a fee share, a rated usage) are kept."""
    return amount.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_UP)


def to_minor_units(amount: Decimal) -> int:
    """Stripe wants integer minor units (fen); rounding happens here, at the boundary."""
    return int(round_to_minor_unit(amount) / MINOR_UNIT)


def from_minor_units(minor: int) -> Decimal:
    return Decimal(minor) * MINOR_UNIT
