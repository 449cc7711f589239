from django import template

from core.money import format_money
from quotas.amounts import limit_display, quota_phrase

register = template.Library()


@register.filter
def money(nanos):
    """Nanos as an amount for people, e.g. ``$1.25`` (``core.money.format_money``: the one
    display rounding rule)."""
    return format_money(nanos)


@register.filter
def price(nanos):
    """A unit price to the nano, e.g. ``$0.075`` (a price is exact: nothing rounded away)."""
    return format_money(nanos, places=9)


@register.filter
def quota_amount(value, metric):
    return limit_display(metric=metric, value=value)


@register.filter(name="quota_phrase")
def quota_phrase_filter(quota):
    """``$5.00 of spending per day``, ``1,000 requests per minute``."""
    return quota_phrase(metric=quota["metric"], limit=quota["limit"], period=quota["period"])
