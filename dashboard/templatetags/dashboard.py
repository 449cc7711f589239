from django import template

from core.money import format_money

register = template.Library()


@register.filter
def money(nanos):
    """Nanos as an amount for people, e.g. ``$1.250000``."""
    return format_money(nanos)


@register.filter
def quota_amount(value, metric):
    return format_money(value) if metric == "cost" else value
