from django import template

register = template.Library()


@register.filter
def scientific(value: int) -> str:
    """3.15e+23 for 315000000000000000000000: training compute is unreadable in full."""
    return f"{value:.3g}" if value >= 1_000_000 else str(value)
